"""What the storage layer puts into DCP's plans, write results and metadata (pickled with them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex


@dataclass(frozen=True)
class RankTarget:
    """The coordinator's instruction to one rank (in ``SavePlan.storage_data``): where to write.

    Attributes:
        save_id: the save's id, in the shard's name.
        rank: the rank, in the shard's name.
        writers: the ranks writing under this rank's key prefix in this save; 0: not known.
        local_writers: those of them on this rank's machine; 0: not known (no pacing).
    """

    save_id: str
    rank: int
    writers: int = 0
    local_writers: int = 0


@dataclass(frozen=True)
class RankGroup:
    """What one rank tells the coordinator (in its local ``SavePlan.storage_data``): the group of
    processes it shares its request-rate state with (``s3_utils.request_rate.sharing_group``)."""

    name: str


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


@dataclass(frozen=True)
class NodeMemory:
    """What a rank tells the coordinator of a load (in its local ``LoadPlan.storage_data``) about its
    node's shared memory.

    Attributes:
        node: which node-local shared memory the rank sees (ranks with the same value share it).
        free_bytes: the room left in it (0 where there is none: every rank reads all it loads).
    """

    node: str
    free_bytes: int


@dataclass(frozen=True)
class SharedItem:
    """One stored span that several ranks of a node read, as it lies in a :class:`SharedFile`.

    Attributes:
        storage_index: the stored item (as in ``ReadItem.storage_index``).
        storage_offsets: the first element of the piece read (``ReadItem.storage_offsets``).
        lengths: the piece's shape (``ReadItem.lengths``).
        offset: where its bytes start in the file.
        length: its bytes (the span of its shard object it needs).
    """

    storage_index: MetadataIndex
    storage_offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    offset: int
    length: int

    @property
    def key(self) -> tuple[MetadataIndex, tuple[int, ...], tuple[int, ...]]:
        """What a ``ReadItem`` of the same bytes has (see ``_replicated_plan.share_key``)."""
        return self.storage_index, self.storage_offsets, self.lengths


@dataclass(frozen=True)
class SharedFile:
    """A node-local shared-memory file of a load: ``reader`` reads ``items`` from S3 into it, and
    ``receivers`` (ranks of the same node) copy them out.

    Attributes:
        name: the file's name (unique to the load; ``_shared_memory`` says where it lies).
        reader: the rank of the load's group that reads the items (its group rank).
        receivers: the group ranks of its node that want every one of ``items``.
        items: the spans it holds, at their offsets.
    """

    name: str
    reader: int
    receivers: tuple[int, ...]
    items: tuple[SharedItem, ...]

    @property
    def size(self) -> int:
        """The file's bytes."""
        last = self.items[-1]
        return last.offset + last.length


@dataclass(frozen=True)
class LoadInstruction:
    """The coordinator's instruction to one rank (in ``LoadPlan.storage_data``): what to read.

    Attributes:
        save_id: the save whose metadata the coordinator read (None for a stock checkpoint).
        shared: every shared-memory file of the load, the same on every rank (each rank writes those
            it reads, copies out of those it receives); the items of this rank's plan that another rank
            of its node reads, this rank does not read.
    """

    save_id: str | None
    shared: tuple[SharedFile, ...] = ()
