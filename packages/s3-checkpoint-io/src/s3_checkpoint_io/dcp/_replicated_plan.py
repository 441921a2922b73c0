"""Which stored bytes several ranks of a load read, which one rank reads for all, and the broadcasts.

A DDP model loaded on every rank, or the replicated parameters and optimizer state of HSDP, make every
rank (or every rank of a replica group) ask for the same bytes of the same shard object. The
coordinator sees every rank's load plan, so it finds those items here: an item is replicated when
more than one rank's plan reads the same piece (``storage_index``, ``storage_offsets``, ``lengths``)
of a stored item. Each is given to one of the ranks that want it, the one with the fewest bytes to
read so far (largest items first, ties to the lowest rank: deterministic). Its small items are packed
with the others that rank reads for the same ranks into broadcasts of at most one chunk; an item
large enough to be read straight into its destination (``_shard_reader.DIRECT_MIN_BYTES``) goes
alone, so that it travels from the reader's destination tensor into each receiver's with no buffer.
Items that different sets of ranks want (HSDP: each replica group's shard) go in different
broadcasts, each sent only to its receivers. Items only one rank wants stay that rank's own reads.

Every rank receives the same sequence of broadcasts, round-robin over the reading ranks; each rank
takes part in those it sends or receives, in that order.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem

from s3_checkpoint_io.dcp._records import Broadcast, SharedItem
from s3_checkpoint_io.dcp._shard_reader import DIRECT_MIN_BYTES, span_bytes
from s3_checkpoint_io.dcp._stored_items import StoredItem

ShareKey = tuple[MetadataIndex, tuple[int, ...], tuple[int, ...]]
"""What makes two read items the same stored bytes."""
ALIGNMENT = 64
"""Each item starts at a multiple of this in a broadcast buffer (so its elements are aligned)."""


def share_key(item: ReadItem) -> ShareKey:
    """The stored piece ``item`` reads: equal for the items of several ranks that read the same bytes."""
    return item.storage_index, tuple(item.storage_offsets), tuple(item.lengths)


def plan_broadcasts(
    plans: Sequence[LoadPlan], locations: Mapping[MetadataIndex, StoredItem], chunk_bytes: int
) -> tuple[Broadcast, ...]:
    """The broadcasts that share the items several of ``plans`` read (one plan per rank of the load).

    Args:
        plans: every rank's load plan, in group-rank order.
        locations: where each stored item lies.
        chunk_bytes: the most bytes one broadcast carries (unless one item is larger).

    Returns:
        The broadcasts, in the order every rank runs them; empty when no item is read by two ranks.
    """
    wanted: dict[ShareKey, set[int]] = {}
    sizes: dict[ShareKey, int] = {}
    for rank, plan in enumerate(plans):
        for item in plan.items:
            key = share_key(item)
            wanted.setdefault(key, set()).add(rank)
            sizes.setdefault(key, span_bytes(item, locations[item.storage_index]))
    load = [0] * len(plans)
    for key, ranks in wanted.items():
        if len(ranks) == 1:
            load[next(iter(ranks))] += sizes[key]
    shared = [key for key, ranks in wanted.items() if len(ranks) > 1 and sizes[key] > 0]
    order = sorted(range(len(shared)), key=lambda i: (-sizes[shared[i]], i))
    read_by: dict[int, dict[tuple[int, ...], list[ShareKey]]] = {}
    for i in order:
        key = shared[i]
        reader = min(wanted[key], key=lambda rank: (load[rank], rank))
        load[reader] += sizes[key]
        receivers = tuple(sorted(wanted[key] - {reader}))
        read_by.setdefault(reader, {}).setdefault(receivers, []).append(key)
    per_source = [
        [
            broadcast
            for receivers, keys in sorted(by_receivers.items())
            for broadcast in _packed(
                source, receivers, sorted(keys, key=lambda k: _position(k, locations)), sizes, chunk_bytes
            )
        ]
        for source, by_receivers in sorted(read_by.items())
    ]
    rows = itertools.zip_longest(*per_source)
    return tuple(broadcast for row in rows for broadcast in row if broadcast is not None)


def _position(key: ShareKey, locations: Mapping[MetadataIndex, StoredItem]) -> tuple[str, int]:
    """Where ``key``'s item lies (object, offset): a reader's items in the order they are stored."""
    location = locations[key[0]]
    return location.name, location.offset


def _packed(
    source: int,
    receivers: tuple[int, ...],
    keys: list[ShareKey],
    sizes: Mapping[ShareKey, int],
    chunk_bytes: int,
) -> list[Broadcast]:
    """``keys`` (read by ``source`` for ``receivers``) in order, packed into broadcasts of at most
    ``chunk_bytes``."""
    broadcasts: list[Broadcast] = []
    items: list[SharedItem] = []
    offset = 0
    for key in keys:
        length = sizes[key]
        alone = length >= DIRECT_MIN_BYTES
        if items and (alone or offset + length > chunk_bytes):
            broadcasts.append(Broadcast(source, receivers, tuple(items)))
            items, offset = [], 0
        items.append(SharedItem(key[0], key[1], key[2], offset, length))
        offset += -(-length // ALIGNMENT) * ALIGNMENT
        if alone:
            broadcasts.append(Broadcast(source, receivers, tuple(items)))
            items, offset = [], 0
    if items:
        broadcasts.append(Broadcast(source, receivers, tuple(items)))
    return broadcasts
