"""Convert a checkpoint to Hugging Face safetensors files, streamed: one tensor in memory at a time
(plus a bounded read-ahead), never the whole model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from s3_checkpoint_io.convert._read_ahead import read_ahead
from s3_checkpoint_io.convert._store import store_for
from s3_checkpoint_io.convert._tensor_bytes import byte_view
from s3_checkpoint_io.convert.errors import DestinationExistsError, SelectionError
from s3_checkpoint_io.convert.locations import Location, location_of
from s3_checkpoint_io.convert.result import ConversionResult
from s3_checkpoint_io.convert.safetensors_format import (
    DEFAULT_MAX_FILE_BYTES,
    INDEX_FILE,
    SINGLE_FILE,
    FilePlan,
    OutputTensor,
    index_bytes,
    plan_files,
    safetensors_dtype,
)
from s3_checkpoint_io.convert.sources import Source, open_source
from s3_checkpoint_io.convert.tensor_entries import TensorEntry
from s3_utils import S3Store
from s3_utils.limits import MiB

log = logging.getLogger(__name__)
DEFAULT_READ_AHEAD_BYTES = 64 * MiB
DEFAULT_READ_WORKERS = 4


@dataclass(frozen=True)
class Selection:
    """Which tensors to write and how.

    Attributes:
        include: keep only keys starting with one of these (e.g. ``("state_dict.",)``); empty: all.
        strip_prefix: removed from the start of every written name that has it (e.g. ``"state_dict."``).
        dtype: cast every floating-point tensor to this type (integer and bool tensors are kept).
    """

    include: tuple[str, ...] = ()
    strip_prefix: str = ""
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None and not self.dtype.is_floating_point:
            raise ValueError(f"Selection.dtype: cast to a floating-point type, not {self.dtype}")
        if self.dtype is not None:
            safetensors_dtype(self.dtype, "Selection.dtype")

    def apply(self, entries: Sequence[TensorEntry], url: str) -> list[OutputTensor]:
        """The tensors of ``entries`` to write, named and typed as asked, in source order.

        Raises:
            SelectionError: if nothing matches ``include``, two names collide after stripping, or a
                tensor's dtype has no safetensors type.
        """
        chosen = [e for e in entries if not self.include or e.key.startswith(self.include)]
        if not chosen:
            sample = ", ".join(e.key for e in entries[:5]) or "none"
            raise SelectionError(
                f"no tensor of {url} has a key starting with {' or '.join(map(repr, self.include))} (its "
                f"{len(entries)} tensors include: {sample}); pick a prefix from `s3ckpt ls --tensors`"
            )
        out: dict[str, OutputTensor] = {}
        for entry in chosen:
            name = entry.key.removeprefix(self.strip_prefix) if self.strip_prefix else entry.key
            dtype = self.dtype if self.dtype is not None and entry.dtype.is_floating_point else entry.dtype
            if name in out or not name:
                raise SelectionError(
                    f"{url}: {entry.key!r} would be written as {name!r}, "
                    f"{'the same name as ' + repr(out[name].key) if name in out else 'an empty name'}; "
                    "strip a shorter prefix"
                )
            safetensors_dtype(dtype, f"tensor {entry.key!r} of {url}")
            out[name] = OutputTensor(name, entry.key, dtype, entry.shape)
        return list(out.values())


def to_safetensors(
    source: str,
    destination: str,
    *,
    selection: Selection | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    overwrite: bool = False,
    trust: bool = False,
    store: S3Store | None = None,
    read_workers: int = DEFAULT_READ_WORKERS,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> ConversionResult:
    """Write the tensors of a checkpoint as safetensors files in the folder or prefix ``destination``.

    ``model.safetensors`` when the data fits in ``max_file_bytes``, else ``model-0000k-of-0000n
    .safetensors`` and ``model.safetensors.index.json``, as Hugging Face's ``save_pretrained`` writes
    them. Every file appears only once complete (S3: one multipart upload each; local: a temporary
    name renamed); the index last. Memory: the largest tensor plus ``read_ahead_bytes`` plus the
    store's part buffers.

    Args:
        source: a sharded checkpoint's prefix or folder, or one ``torch.save`` file (``s3://`` or local).
        destination: the folder or ``s3://`` prefix to write into.
        selection: which tensors, renamed and cast how; all tensors as they are by default.
        max_file_bytes: tensor bytes per file at most (one larger tensor gets a file of its own).
        overwrite: replace files already there (and remove a stale single file or index of another split).
        trust: unpickle a single-file source fully (else ``weights_only=True``).
        store: the store for ``s3://`` URLs (default: one from the ``AWS_*`` environment, closed after).
        read_workers: tensors read at once.
        read_ahead_bytes: bytes of tensors read ahead of the writer at most.
        on_progress: told the bytes of each piece written.

    Returns:
        What was written.

    Raises:
        SourceNotFoundError: if nothing is at ``source``.
        CorruptCheckpointError: if ``source`` is not a checkpoint.
        IncompleteCheckpointError: if a shard the commit references is missing or short.
        SelectionError: if the selection matches nothing or a dtype cannot be stored.
        DestinationExistsError: if safetensors files are already at ``destination`` and not ``overwrite``.
        S3Error: if a transfer fails (nothing is published for the file being written).
    """
    if max_file_bytes < 1:
        raise ValueError(f"max_file_bytes must be >= 1, got {max_file_bytes}")
    started = time.perf_counter()
    with store_for(store) as s3:
        opened = open_source(source, s3, trust)
        tensors = (selection or Selection()).apply(opened.tensors(), opened.url)
        plans = plan_files(tensors, max_file_bytes)
        target = location_of(destination, s3)
        written = [p.name for p in plans] + ([INDEX_FILE] if len(plans) > 1 else [])
        stale = [n for n in (SINGLE_FILE, INDEX_FILE) if n not in written]
        _refuse_existing(target, written + stale, overwrite)
        files = _write_files(opened, target, plans, read_workers, read_ahead_bytes, on_progress)
        if len(plans) > 1:
            index = index_bytes(plans)
            with target.writer(INDEX_FILE, len(index)) as out:
                out.write(index)
            files.append((target.url(INDEX_FILE), len(index)))
        for name in stale:
            if target.size(name) is not None:
                target.remove(name)  # another split's entry point would shadow or contradict the new one
    result = ConversionResult(
        opened.url, target.url(""), tuple(files), len(tensors), time.perf_counter() - started
    )
    log.info(
        "converted %s (%s) to safetensors at %s: %d tensors in %d file(s), %.1f MiB in %.2f s (%.1f MiB/s)",
        result.source,
        opened.kind,
        result.destination,
        result.tensors,
        len(plans),
        result.bytes / MiB,
        result.seconds,
        result.bytes / MiB / max(result.seconds, 1e-9),
    )
    return result


def _refuse_existing(target: Location, names: Sequence[str], overwrite: bool) -> None:
    if overwrite:
        return
    present = [n for n in names if target.size(n) is not None]
    if present:
        raise DestinationExistsError(
            f"{target.url('')} already holds {', '.join(present)}; pass overwrite=True (s3ckpt convert "
            "--overwrite) to replace them, or choose another destination"
        )


def _write_files(  # noqa: PLR0917  # private: one caller, every argument a different role
    source: Source,
    target: Location,
    plans: Sequence[FilePlan],
    workers: int,
    max_bytes: int,
    on_progress: Callable[[int], None] | None,
) -> list[tuple[str, int]]:
    ordered = [(plan, tensor) for plan in plans for tensor in plan.tensors]

    def read(pair: tuple[FilePlan, OutputTensor]) -> torch.Tensor:
        tensor = source.read_tensor(pair[1].key)
        return tensor.to(pair[1].dtype).contiguous() if tensor.dtype != pair[1].dtype else tensor.contiguous()

    files: list[tuple[str, int]] = []
    tensors = read_ahead(ordered, read, lambda pair: pair[1].nbytes, workers, max_bytes)
    try:
        for plan in plans:
            with target.writer(plan.name, plan.size) as out:
                out.write(plan.header)
                for _ in plan.tensors:
                    (_, expected), tensor = next(tensors)
                    if tuple(tensor.shape) != expected.shape:
                        raise ValueError(
                            f"{source.url}: {expected.key} read as shape {list(tensor.shape)}, its metadata "
                            f"says {list(expected.shape)}"
                        )
                    out.write(byte_view(tensor))
                    if on_progress is not None:
                        on_progress(expected.nbytes)
            files.append((target.url(plan.name), plan.size))
    finally:
        tensors.close()
    return files
