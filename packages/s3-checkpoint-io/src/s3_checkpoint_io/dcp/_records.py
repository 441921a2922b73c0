"""What the storage layer puts into DCP's plans, write results and metadata (pickled with them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex


@dataclass(frozen=True)
class RankTarget:
    """The coordinator's instruction to one rank (in ``SavePlan.storage_data``): where to write."""

    save_id: str
    rank: int


@dataclass(frozen=True)
class ShardLocation:
    """Where one written item's bytes are (the ``storage_data`` of its ``WriteResult``).

    Attributes:
        name: the shard object's name under the checkpoint prefix.
        offset: first byte of the item in that object.
        length: the item's size in bytes.
        dtype: for a tensor, its element type (the bytes are the raw, C-contiguous elements).
        shape: for a tensor, its shape; None for a byte-io item (a ``torch.save`` stream).
    """

    name: str
    offset: int
    length: int
    dtype: torch.dtype | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CommitRecord:
    """The ``Metadata.storage_data`` of a committed checkpoint: the one save it references.

    Attributes:
        save_id: the save that wrote the shards.
        shard_names: every shard object the checkpoint needs (all carry ``save_id``).
        locations: where each item's bytes are.
    """

    save_id: str
    shard_names: tuple[str, ...]
    locations: dict[MetadataIndex, ShardLocation] = field(default_factory=dict)
