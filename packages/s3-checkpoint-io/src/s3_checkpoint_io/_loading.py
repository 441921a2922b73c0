"""``torch.load`` from a downloaded buffer, with errors that say what went wrong and what to do."""

from __future__ import annotations

import contextlib
import errno
import pickle
from collections.abc import Iterator
from typing import IO, Any, cast

import torch
from typing_extensions import Buffer

from s3_checkpoint_io._reader import BufferReader
from s3_checkpoint_io.errors import CorruptCheckpointError, WeightsOnlyLoadError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL_2 = 0x80  # torch.save's legacy format begins with a pickle protocol marker
_CORRUPT_HINTS = (
    "PytorchStreamReader",
    "zip archive",
    "central directory",
    "file not found",
    "EOF",
    "seek position",
)


def load_from_buffer(
    buffer: Buffer,
    url: str,
    map_location: Any,
    weights_only: bool | None,
    mapped_path: str | None = None,
) -> Any:
    """Unpickle a ``torch.save`` checkpoint straight from ``buffer``, without copying it first.

    Args:
        buffer: the whole object as downloaded.
        url: where it came from, for messages.
        map_location: passed to ``torch.load``.
        weights_only: passed to ``torch.load`` (None: torch's own default, True since torch 2.6).
        mapped_path: a path whose file holds the same bytes as ``buffer`` (an in-memory file): a zip
            checkpoint is then loaded with ``mmap=True``, so its tensors are views of that file's pages
            rather than copies.

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
        if mapped_path is not None and head == _ZIP_MAGIC:
            return torch.load(mapped_path, map_location=map_location, weights_only=weights_only, mmap=True)
        with BufferReader(view) as reader:
            return torch.load(cast(IO[bytes], reader), map_location=map_location, weights_only=weights_only)


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
