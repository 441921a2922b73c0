"""Stream one rank's items into one shard object, each encoded as torch's ``FileSystemWriter`` encodes it.

A byte item is its stream's bytes; a tensor is a ``torch.save`` stream of it. The stream's header is
made by ``torch.save`` itself under ``torch.serialization.skip_data`` (which leaves a hole where the
storage's bytes go), and the hole is filled from the tensor's memory, so no serialized copy of the
tensor is ever made and the writer learns where its raw elements lie (recorded in the commit, so that
our reader can fetch them with ranged GETs). Every item starts at a multiple of :data:`ALIGNMENT`, and
torch aligns the storage within its stream, so raw elements are aligned in the object too.
"""

from __future__ import annotations

import ctypes
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.planner import SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from s3_utils import S3Writer

ALIGNMENT = 64
"""Every item starts at a multiple of this offset in its object."""
_STREAM_OVERHEAD = 4096
"""About how many bytes a ``torch.save`` stream of one tensor adds to its elements (for the size hint)."""


@dataclass(frozen=True)
class WrittenItem:
    """Where one written item went (the ``storage_data`` of its ``WriteResult``, sent to the coordinator).

    Attributes:
        info: torch's own location record, as the commit stores it.
        raw_offset: for a tensor, where its raw elements start in the object.
    """

    info: _StorageInfo
    raw_offset: int | None


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a CPU, C-contiguous ``tensor``, without copying them (valid while it lives)."""
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * size).from_address(tensor.data_ptr())).cast("B")


def expected_shard_bytes(items: Sequence[WriteItem]) -> int:
    """About how large the shard object of ``items`` will be: its tensors' bytes and stream headers
    (byte items are small and not counted), so the upload can split it into equal parallel parts."""
    total = 0
    for item in items:
        if item.tensor_data is not None:
            elements = math.prod(item.tensor_data.chunk.sizes)
            total += elements * item.tensor_data.properties.dtype.itemsize + _STREAM_OVERHEAD
    return total


def write_items(
    writer: S3Writer, name: str, items: Sequence[WriteItem], planner: SavePlanner
) -> list[WriteResult]:
    """Write ``items`` one after another into ``writer`` (the shard object ``name``).

    Items are resolved one at a time, so at most one item beyond the writer's part buffers is held.

    Args:
        writer: the open streaming writer of the shard object.
        name: the shard object's name under the checkpoint prefix (recorded in each location).
        items: this rank's write items.
        planner: resolves each item to its data.

    Returns:
        One result per item, with its :class:`WrittenItem`.
    """
    results = []
    for item in items:
        data = planner.resolve_data(item)
        writer.write(bytes(-writer.tell() % ALIGNMENT))
        offset = writer.tell()
        raw_offset = None
        if item.type == WriteItemType.BYTE_IO:
            writer.write(data.getbuffer() if isinstance(data, io.BytesIO) else memoryview(bytes(data)))
        else:
            assert isinstance(data, torch.Tensor)
            raw_offset = _write_tensor_stream(writer, _owning_tensor(data))
        info = _StorageInfo(relative_path=name, offset=offset, length=writer.tell() - offset)
        results.append(
            WriteResult(
                index=item.index, size_in_bytes=info.length, storage_data=WrittenItem(info, raw_offset)
            )
        )
    return results


def _owning_tensor(data: torch.Tensor) -> torch.Tensor:
    """``data`` on the CPU as a contiguous tensor whose storage holds exactly its elements (``torch.save``
    writes a tensor's whole storage, and a view's storage can be far larger than the view)."""
    tensor = data.detach().to("cpu").contiguous()
    if (
        tensor.storage_offset() != 0
        or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
    ):
        tensor = tensor.clone()
    return tensor


class _FilledStream(io.RawIOBase):
    """What ``torch.save`` writes to under ``skip_data``: its writes go to ``out``, and the one hole it
    leaves (a relative seek over the storage's bytes) is filled with ``data``."""

    def __init__(self, out: S3Writer, data: memoryview) -> None:
        super().__init__()
        self._out = out
        self._data = data
        self.data_offset: int | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        return self._out.write(chunk)

    def tell(self) -> int:
        return self._out.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_CUR or offset != len(self._data) or self.data_offset is not None:
            raise RuntimeError(
                f"torch.save moved in its stream in a way this writer does not know (seek {offset}, "
                f"{whence}): this torch version writes tensors differently; please report it"
            )
        self.data_offset = self._out.tell()
        self._out.write(self._data)
        return self._out.tell()


def _write_tensor_stream(writer: S3Writer, tensor: torch.Tensor) -> int:
    """Write ``torch.save(tensor)`` into ``writer``; return where its raw elements start."""
    stream = _FilledStream(writer, tensor_bytes(tensor))
    with torch.serialization.skip_data():
        torch.save(tensor, stream)  # type: ignore[arg-type]  # a binary IO in all but name
    if stream.data_offset is None:  # an empty tensor: no storage bytes, no hole
        return writer.tell()
    return stream.data_offset
