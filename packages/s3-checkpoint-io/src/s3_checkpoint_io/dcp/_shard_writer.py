"""Stream one rank's items into one shard object: tensors as their raw bytes, others as byte streams."""

from __future__ import annotations

import ctypes
import io
import math
from collections.abc import Sequence

import torch
from torch.distributed.checkpoint.planner import SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from s3_checkpoint_io.dcp._records import ShardLocation
from s3_utils import S3Writer

ALIGNMENT = 64
"""Every tensor starts at a multiple of this offset, so a reader can view its bytes in place."""


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a CPU, C-contiguous ``tensor``, without copying them (valid while it lives)."""
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * size).from_address(tensor.data_ptr())).cast("B")


def expected_shard_bytes(items: Sequence[WriteItem]) -> int:
    """About how large the shard object of ``items`` will be: its tensors' bytes and alignment (byte
    items are small and not counted), so the upload can split it into equal parallel parts."""
    total = 0
    for item in items:
        if item.tensor_data is not None:
            elements = math.prod(item.tensor_data.chunk.sizes)
            total += elements * item.tensor_data.properties.dtype.itemsize + ALIGNMENT
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
        One result per item, with its :class:`ShardLocation`.
    """
    results = []
    for item in items:
        data = planner.resolve_data(item)
        if item.type == WriteItemType.BYTE_IO:
            raw = data.getbuffer() if isinstance(data, io.BytesIO) else memoryview(bytes(data))
            location = ShardLocation(name, writer.tell(), len(raw))
            writer.write(raw)
        else:
            assert isinstance(data, torch.Tensor)
            tensor = data.detach().to("cpu").contiguous()
            writer.write(bytes(-writer.tell() % ALIGNMENT))
            view = tensor_bytes(tensor)
            location = ShardLocation(name, writer.tell(), len(view), tensor.dtype, tuple(tensor.shape))
            writer.write(view)
        results.append(WriteResult(index=item.index, size_in_bytes=location.length, storage_data=location))
    return results
