"""Copy the items of a load plan out of the shard objects they live in, into the destination state.

Only the bytes the plan needs are read. Each item's bytes are a span of its shard object: for a
tensor whose raw elements' offset the commit records, from its first to its last needed element (a
resharded piece); for a ``torch.save`` stream of a stock checkpoint, the whole stream, loaded with
``torch.load`` as torch's own reader does. Large tensor spans whose destination is a
contiguous CPU tensor of the same type are read straight into it; the other spans are merged, when
they lie close together in one object, into buffered reads of at most one chunk that are copied out.
Every read is cut into chunk-sized ranged GETs, run in offset order within each object and
round-robin across the objects (so all of them are read at once), with at most
``2 * max_concurrency`` reads (and so chunk buffers) outstanding.

Shard objects are never overwritten (every save writes new names), so the GETs need no ``If-Match``:
an object deleted by a newer commit fails the load with ``S3NotFoundError``.
"""

from __future__ import annotations

import io
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlanner, ReadItem

from s3_checkpoint_io.dcp._layout import CheckpointLayout
from s3_checkpoint_io.dcp._shard_writer import tensor_bytes
from s3_checkpoint_io.dcp._stored_items import StoredItem
from s3_utils import S3Store
from s3_utils.download import chunk_ranges

DIRECT_MIN_BYTES = 1024 * 1024
"""A tensor span at least this large is read straight into its destination (no buffer, no copy)."""
MERGE_GAP_BYTES = 256 * 1024
"""Two spans of one object at most this far apart are read by one GET (the gap is read and dropped)."""


@dataclass
class _Span:
    """One item and the bytes of its shard object it needs."""

    item: ReadItem
    location: StoredItem
    start: int
    end: int
    target: torch.Tensor | None = None  # set when read straight into the destination

    @property
    def is_stream(self) -> bool:
        """A tensor read as its whole ``torch.save`` stream (its raw offset is not recorded)."""
        return self.location.is_tensor and self.location.raw_offset is None


@dataclass
class _Read:
    """One ranged GET: ``[start, end)`` of the object ``name``, into ``buffer``."""

    name: str
    start: int
    end: int
    buffer: memoryview
    spans: list[_Span] = field(default_factory=list)  # buffered: filled once the read is done
    direct: _Span | None = None  # direct: committed once its last read is done
    last_of_direct: bool = False


def read_items(
    store: S3Store,
    layout: CheckpointLayout,
    items: Sequence[ReadItem],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
    *,
    copies: Mapping[ReadItem, memoryview] | None = None,
) -> int:
    """Read the bytes ``items`` need from their shard objects and fill every item.

    Args:
        store: the store to read with; its ``chunk_size`` and ``max_concurrency`` size the reads.
        layout: where the shard objects are.
        items: this rank's read items.
        locations: where each stored item's bytes are (from the committed metadata).
        planner: resolves each item's destination and takes the loaded data.
        copies: for some of ``items``, where to copy their span bytes too, as each is read (for
            other ranks); each as large as its item's span.

    Returns:
        The bytes downloaded.

    Raises:
        S3NotFoundError: if a shard object the committed metadata references is missing.
        ValueError: if a stored tensor piece does not fit the destination's shape.
    """
    spans = sorted(
        (_span_of(item, locations[item.storage_index]) for item in items),
        key=lambda span: (span.location.name, span.start),
    )
    copies = copies or {}
    reads: list[_Read] = []
    for span in spans:
        if span.start == span.end:
            _fill(span, memoryview(b""), span.start, planner)  # nothing stored (an empty tensor)
            continue
        target = _direct_target(span, planner)
        if target is not None:
            span.target = target
            reads.extend(_direct_reads(span, store.transfer_config.chunk_size))
        else:
            _add_buffered(reads, span, store.transfer_config.chunk_size)
    reads = _interleaved(reads)
    workers = store.transfer_config.max_concurrency
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dcp-read") as pool:
        pending: deque[tuple[_Read, Future[int]]] = deque()
        try:
            for read in reads:
                if len(pending) >= 2 * workers:
                    _finish(*pending.popleft(), planner, copies)
                pending.append((read, pool.submit(_get, store, layout, read)))
            while pending:
                _finish(*pending.popleft(), planner, copies)
        finally:
            for _, future in pending:
                future.cancel()
    return sum(read.end - read.start for read in reads)


def span_bytes(item: ReadItem, location: StoredItem) -> int:
    """How many bytes of its shard object ``item`` needs (what reading it downloads)."""
    span = _span_of(item, location)
    return span.end - span.start


def fill_from(item: ReadItem, location: StoredItem, data: memoryview, planner: LoadPlanner) -> None:
    """Hand ``item`` its span's bytes ``data`` (read by another rank), as a read of its own would."""
    span = _span_of(item, location)
    _fill(_Span(item, location, 0, span.end - span.start), data, 0, planner)


def _interleaved(reads: list[_Read]) -> list[_Read]:
    """``reads`` (grouped by object, each in offset order) taken round-robin across the objects, so
    that every object is read at once, each from its start to its end."""
    by_object: dict[str, list[_Read]] = {}
    for read in reads:
        by_object.setdefault(read.name, []).append(read)
    rows = itertools.zip_longest(*by_object.values())
    return [read for row in rows for read in row if read is not None]


def _span_of(item: ReadItem, location: StoredItem) -> _Span:
    """The bytes of its object that ``item`` needs: a byte-io item's or a tensor stream's whole bytes,
    or for a tensor piece whose raw elements are located the bytes from its first to its last element
    (row-major)."""
    if item.type == LoadItemType.BYTE_IO or location.raw_offset is None or location.length == 0:
        return _Span(item, location, location.offset, location.end)
    assert location.shape is not None, "a tensor's location records its shape"
    assert location.dtype is not None, "a tensor's location records its dtype"
    base = location.raw_offset
    shape = location.shape
    strides = [math.prod(shape[dim + 1 :]) for dim in range(len(shape))]
    first = sum(start * stride for start, stride in zip(item.storage_offsets, strides, strict=True))
    last = sum(
        (start + length - 1) * stride
        for start, length, stride in zip(item.storage_offsets, item.lengths, strides, strict=True)
    )
    if any(length == 0 for length in item.lengths):
        return _Span(item, location, base, base)
    element = location.dtype.itemsize
    return _Span(item, location, base + first * element, base + (last + 1) * element)


def _direct_target(span: _Span, planner: LoadPlanner) -> torch.Tensor | None:
    """The destination tensor, if ``span`` can be read straight into it: a large, gap-free tensor
    piece whose destination is a contiguous CPU tensor of the stored type and the piece's shape."""
    if span.item.type == LoadItemType.BYTE_IO or span.is_stream or span.end - span.start < DIRECT_MIN_BYTES:
        return None
    target = planner.resolve_tensor(span.item).detach()
    return target if target.device.type == "cpu" and _holds_span(target, span) else None


def _holds_span(target: torch.Tensor, span: _Span) -> bool:
    """Whether ``target``'s memory, filled, is ``span``'s bytes as stored: a contiguous tensor of the
    stored type and the piece's shape, for a gap-free tensor piece."""
    return (
        span.item.type != LoadItemType.BYTE_IO
        and not span.is_stream
        and target.is_contiguous()
        and target.dtype == span.location.dtype
        and tuple(target.size()) == tuple(span.item.lengths)
        and target.numel() * target.element_size() == span.end - span.start
    )


def _direct_reads(span: _Span, chunk: int) -> list[_Read]:
    assert span.target is not None
    whole = tensor_bytes(span.target)
    reads = [
        _Read(span.location.name, start, end, whole[start - span.start : end - span.start], direct=span)
        for start, end in chunk_ranges(span.start, span.end, chunk)
    ]
    reads[-1].last_of_direct = True
    return reads


def _add_buffered(reads: list[_Read], span: _Span, chunk: int) -> None:
    """Extend the last buffered read with ``span`` if it is close and the read stays within a chunk,
    else start a new one."""
    last = reads[-1] if reads else None
    if (
        last is not None
        and last.direct is None
        and last.name == span.location.name
        and span.start - last.end <= MERGE_GAP_BYTES
        and max(last.end, span.end) - last.start <= chunk
    ):
        last.end = max(last.end, span.end)
        last.spans.append(span)
        return
    reads.append(_Read(span.location.name, span.start, span.end, memoryview(b""), spans=[span]))


def _get(store: S3Store, layout: CheckpointLayout, read: _Read) -> int:
    """Run one read (one GET: it is at most a chunk); buffered reads allocate their buffer here."""
    if read.direct is None:
        read.buffer = memoryview(bytearray(read.end - read.start))
    return store.download_range(layout.url_of(read.name), read.start, read.buffer)


def _finish(
    read: _Read, future: Future[int], planner: LoadPlanner, copies: Mapping[ReadItem, memoryview]
) -> None:
    """Wait for ``read``, then hand what it completed to the planner (in the calling thread), copying
    the bytes of the items in ``copies`` there."""
    future.result()
    if read.direct is not None:
        if read.last_of_direct:
            span = read.direct
            assert span.target is not None
            if (copy := copies.get(span.item)) is not None:
                copy[:] = tensor_bytes(span.target)
            planner.commit_tensor(span.item, span.target)
        return
    for span in read.spans:
        if (copy := copies.get(span.item)) is not None:
            copy[:] = read.buffer[span.start - read.start : span.end - read.start]
        _fill(span, read.buffer, read.start, planner)
    read.buffer = memoryview(b"")  # release the bytes now, not when the whole load ends


def _fill(span: _Span, buffer: memoryview, buffer_start: int, planner: LoadPlanner) -> None:
    """Hand ``span``'s item its bytes, which lie in ``buffer`` (holding the object from ``buffer_start``)."""
    item, location = span.item, span.location
    data = buffer[span.start - buffer_start : span.end - buffer_start]
    if item.type == LoadItemType.BYTE_IO:
        planner.load_bytes(item, io.BytesIO(data))
        return
    assert location.shape is not None, "a tensor's location records its shape"
    assert location.dtype is not None, "a tensor's location records its dtype"
    lengths = tuple(item.lengths)
    if span.is_stream:
        stored = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths, strict=True)):
            stored = stored.narrow(dim, start, length)
    elif len(data) == 0:
        stored = torch.empty(lengths, dtype=location.dtype)
    else:
        strides = tuple(math.prod(location.shape[dim + 1 :]) for dim in range(len(location.shape)))
        flat = torch.frombuffer(data, dtype=location.dtype)
        stored = flat.as_strided(lengths, strides)
    target = planner.resolve_tensor(item).detach()
    if target.size() != stored.size():
        raise ValueError(
            f"{item.storage_index.fqn}: the checkpoint holds a {tuple(stored.size())} piece where the "
            f"state dict expects {tuple(target.size())}; load into a state dict of the saved shapes"
        )
    target.copy_(stored)
    planner.commit_tensor(item, target)
