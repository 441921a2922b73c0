"""Copy the items of a load plan out of the shard objects they live in, into the destination state."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlanner, ReadItem

from s3_checkpoint_io.dcp._layout import CheckpointLayout
from s3_checkpoint_io.dcp._records import ShardLocation
from s3_utils import S3Store


def read_items(
    store: S3Store,
    layout: CheckpointLayout,
    items: Sequence[ReadItem],
    locations: Mapping[MetadataIndex, ShardLocation],
    planner: LoadPlanner,
) -> int:
    """Download each shard object ``items`` need (parallel ranged GETs), then fill every item from it.

    One shard object is in memory at a time; objects no item needs are not read.

    Returns:
        The bytes downloaded.

    Raises:
        S3NotFoundError: if a shard object the committed metadata references is missing.
        S3ObjectChangedError: if a shard object changed during the download.
    """
    by_name: dict[str, list[ReadItem]] = defaultdict(list)
    for item in items:
        by_name[locations[item.storage_index].name].append(item)
    downloaded = 0
    for name, wanted in by_name.items():
        shard = store.download_bytes(layout.url_of(name))
        downloaded += len(shard)
        for item in sorted(wanted, key=lambda read: locations[read.storage_index].offset):
            _fill(item, locations[item.storage_index], shard, planner)
    return downloaded


def _fill(item: ReadItem, location: ShardLocation, shard: bytearray, planner: LoadPlanner) -> None:
    if item.type == LoadItemType.BYTE_IO:
        end = location.offset + location.length
        planner.load_bytes(item, io.BytesIO(memoryview(shard)[location.offset : end]))
        return
    stored = _tensor_at(shard, location)
    for dim, (start, length) in enumerate(zip(item.storage_offsets, item.lengths, strict=True)):
        stored = stored.narrow(dim, start, length)
    target = planner.resolve_tensor(item).detach()
    if target.size() != stored.size():
        raise ValueError(
            f"{item.storage_index.fqn}: the checkpoint holds a {tuple(stored.size())} piece where the "
            f"state dict expects {tuple(target.size())}; load into a state dict of the saved shapes"
        )
    target.copy_(stored)
    planner.commit_tensor(item, target)


def _tensor_at(shard: bytearray, location: ShardLocation) -> torch.Tensor:
    assert location.dtype is not None, "a tensor's location records its dtype"
    assert location.shape is not None, "a tensor's location records its shape"
    if location.length == 0:
        return torch.empty(location.shape, dtype=location.dtype)
    count = location.length // torch.empty((), dtype=location.dtype).element_size()
    flat = torch.frombuffer(shard, dtype=location.dtype, count=count, offset=location.offset)
    return flat.reshape(location.shape)
