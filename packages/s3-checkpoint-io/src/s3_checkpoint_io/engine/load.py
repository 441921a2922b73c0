"""``torch.load`` from a downloaded buffer, with errors that say what went wrong and what to do."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import pickle
from collections.abc import Iterator
from typing import IO, Any, cast

import torch
from typing_extensions import Buffer

from s3_checkpoint_io.engine.buffer_reader import BufferReader
from s3_checkpoint_io.engine.memory_file import MemoryFile, memory_files_supported
from s3_checkpoint_io.errors import CorruptCheckpointError, WeightsOnlyLoadError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL_2 = 0x80  # torch.save's legacy format begins with a pickle protocol marker
_COPY_CHUNK = 4 * 2**20
"""Bytes copied out of the mapping between two releases of its pages: the extra peak of a load."""
MAPPED_LOAD_MIN_BYTES = 64 * 2**20
"""From this size on a checkpoint is downloaded into an in-memory file and loaded mapped; below it,
into ordinary memory and loaded with one copy.

Mapped, a load needs about one checkpoint of memory, not two, but each page is touched twice, in the
in-memory file and again in the storage copied out of it, and freed from the file besides. For a small
checkpoint the second copy costs little memory and the ordinary load is faster. Measured on this
project's 2-core host (SeaweedFS on loopback, ``load_checkpoint`` of a state dict of 16 MiB tensors,
both ways in shuffled order, 12 loads each, medians): 16 MiB 29 ms and 1.06 CPU s/GiB against 39 ms
and 1.84 mapped; 32 MiB 46 against 67 ms; 64 MiB 90 against 131 ms; 128 MiB 249 against 232 ms and
256 MiB 527 against 463 ms, where the mapped load is the faster as well as the smaller.
"""
_CORRUPT_HINTS = (
    "PytorchStreamReader",
    "zip archive",
    "central directory",
    "file not found",
    "EOF",
    "seek position",
)


def download_target(size: int) -> MemoryFile | bytearray:
    """Where to download a checkpoint of ``size`` bytes before :func:`load_from_buffer`.

    Returns:
        A :class:`MemoryFile` (pass it as ``mapped``) from :data:`MAPPED_LOAD_MIN_BYTES` on where the
        platform has in-memory files, else a ``bytearray``.
    """
    if size >= MAPPED_LOAD_MIN_BYTES and memory_files_supported():
        return MemoryFile(size)
    return bytearray(size)


def load_from_buffer(
    buffer: Buffer,
    url: str,
    map_location: Any,
    weights_only: bool | None,
    mapped: MemoryFile | None = None,
) -> Any:
    """Unpickle a ``torch.save`` checkpoint straight from ``buffer``, without copying it first.

    Args:
        buffer: the whole object as downloaded.
        url: where it came from, for messages.
        map_location: passed to ``torch.load``.
        weights_only: passed to ``torch.load`` (None: torch's own default, True since torch 2.6).
        mapped: an in-memory file holding the same bytes as ``buffer``: a zip checkpoint is then
            loaded with ``mmap=True``, and for a CPU ``map_location`` each storage is copied out and
            its pages freed as it is reached, so the load needs about one checkpoint of memory and
            keeps nothing of the file mapped afterwards.

    Returns:
        What ``torch.load`` returns.

    Raises:
        CorruptCheckpointError: if the bytes are not a readable torch checkpoint.
        WeightsOnlyLoadError: if ``weights_only`` loading refused an object in the checkpoint.
    """
    view = memoryview(buffer)
    head = bytes(view[:4])
    if head != _ZIP_MAGIC and not (head and head[0] == _PICKLE_PROTOCOL_2):
        raise CorruptCheckpointError(
            f"{url} is not a torch.save checkpoint ({view.nbytes} bytes starting {head!r}); check that "
            "the path points at a .ckpt written by torch.save / Lightning"
        )
    with _explained_errors(url, view.nbytes):
        if mapped is not None and head == _ZIP_MAGIC:
            if _is_cpu(map_location):
                map_location = _CopyOut(mapped)
            return torch.load(mapped.path, map_location=map_location, weights_only=weights_only, mmap=True)
        with BufferReader(view) as reader:
            return torch.load(cast(IO[bytes], reader), map_location=map_location, weights_only=weights_only)


def _is_cpu(map_location: Any) -> bool:
    return isinstance(map_location, str | torch.device) and torch.device(map_location).type == "cpu"


class _CopyOut:
    """A ``map_location`` for ``torch.load(mmap=True)``: each storage becomes a copy in ordinary memory.

    Tensors left as views of the mapping would keep the whole file in memory while any one of them
    lives (say, a CPU optimizer state), and in-place updates would copy their pages once more. So each
    storage is copied as ``torch.load`` reaches it and its pages are freed in the file at once: the peak
    stays about one checkpoint plus a page or two per storage.
    """

    def __init__(self, mapped: MemoryFile) -> None:
        self._mapped = mapped

    def __call__(self, storage: torch.UntypedStorage, location: str) -> torch.UntypedStorage:
        nbytes = storage.nbytes()
        offset = self._mapped.offset_at(storage.data_ptr()) if nbytes else None
        if offset is None:
            clone: torch.UntypedStorage = storage.clone()  # type: ignore[no-untyped-call]
            return clone
        target = torch.empty(nbytes, dtype=torch.uint8)
        # Read through the download's own mapping, whose pages are already in place (torch's would
        # fault each one in again), with one plain memcpy per chunk: ``Tensor.copy_`` hands each chunk
        # to OpenMP, whose threads then spin waiting for more work (1.4 of 1.6 CPU s/GiB measured).
        source, destination = self._mapped.address + offset, target.data_ptr()
        for start in range(0, nbytes, _COPY_CHUNK):
            end = min(start + _COPY_CHUNK, nbytes)
            ctypes.memmove(destination + start, source + start, end - start)
            # Free what is copied, from the first page wholly after what was freed before; a page
            # shared with bytes outside the storage (a neighbour's) is kept.
            freed = max(offset, (offset + start) // mmap.PAGESIZE * mmap.PAGESIZE)
            self._mapped.release(freed, offset + end - freed)
        return target.untyped_storage()


@contextlib.contextmanager
def _explained_errors(url: str, nbytes: int) -> Iterator[None]:
    try:
        yield
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            first_line = str(exc).strip().splitlines()[0]
            raise WeightsOnlyLoadError(
                f"{url} holds objects that weights_only=True refuses to unpickle ({first_line}). "
                "If you trust where the checkpoint came from, load it with weights_only=False "
                "(unpickling can run arbitrary code), or allow the needed classes with "
                "torch.serialization.add_safe_globals([...])"
            ) from exc
        raise CorruptCheckpointError(f"{url} is corrupt: unpickling failed: {exc}") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        # a truncated zip read from a file makes torch seek before its start: EINVAL
        invalid_seek = isinstance(exc, OSError) and exc.errno == errno.EINVAL
        if isinstance(exc, EOFError) or invalid_seek or any(hint in str(exc) for hint in _CORRUPT_HINTS):
            raise CorruptCheckpointError(f"{url} is corrupt or truncated ({nbytes} bytes): {exc}") from exc
        raise
