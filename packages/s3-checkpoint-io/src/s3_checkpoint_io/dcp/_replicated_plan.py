"""Which stored bytes several ranks of a node read, which one rank of the node reads for the others,
and the shared-memory files that carry them.

A DDP model loaded on every rank, or the replicated parameters and optimizer state of HSDP, make every
rank (or every rank of a replica group) ask for the same bytes of the same shard object. The
coordinator sees every rank's load plan, so it finds those items here: an item is replicated on a
node when more than one of the node's ranks' plans reads the same piece (``storage_index``,
``storage_offsets``, ``lengths``) of a stored item. Nodes are the ranks that see the same node-local
shared memory (each rank's :class:`~s3_checkpoint_io.dcp._records.NodeMemory`, grouped by
:func:`~s3_checkpoint_io.one_rank.node_readers`); each node reads its replicated items once, and
nothing travels between nodes. On each node each item is given to one of the ranks that want it, the
one with the fewest bytes to read so far (largest items first, ties to the lowest rank:
deterministic). The items a rank reads for the same set of ranks lie, in stored order, in one
shared-memory file (:class:`~s3_checkpoint_io.dcp._records.SharedFile`), each at an aligned offset.
Items only one rank of a node wants stay that rank's own reads, and so does every item of a node
whose shared memory has no room for its files (with a warning).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem

from s3_checkpoint_io.dcp._records import NodeMemory, SharedFile, SharedItem
from s3_checkpoint_io.dcp._shard_reader import span_bytes
from s3_checkpoint_io.dcp._stored_items import StoredItem
from s3_checkpoint_io.one_rank import node_readers

log = logging.getLogger(__name__)

ShareKey = tuple[MetadataIndex, tuple[int, ...], tuple[int, ...]]
"""What makes two read items the same stored bytes."""
ALIGNMENT = 64
"""Each item starts at a multiple of this in a shared file (so its elements are aligned)."""


def share_key(item: ReadItem) -> ShareKey:
    """The stored piece ``item`` reads: equal for the items of several ranks that read the same bytes."""
    return item.storage_index, tuple(item.storage_offsets), tuple(item.lengths)


def plan_shared_files(
    plans: Sequence[LoadPlan],
    nodes: Sequence[NodeMemory],
    locations: Mapping[MetadataIndex, StoredItem],
    token: str,
) -> tuple[SharedFile, ...]:
    """The shared-memory files that share the items several ranks of a node read.

    Args:
        plans: every rank's load plan, in group-rank order.
        nodes: every rank's node-local shared memory, in group-rank order.
        locations: where each stored item lies.
        token: unique to this load: the files' names start with it.

    Returns:
        The files, node by node, each node's by reader; empty when no node has an item two of its
        ranks read.
    """
    files: list[SharedFile] = []
    for ranks in node_readers([node.node for node in nodes]):
        planned = _node_files(plans, ranks, locations, token)
        size = sum(file.size for file in planned)
        room = min(nodes[rank].free_bytes for rank in ranks)
        if size > room:
            log.warning(
                "DCP load: the ranks %s of one node share %.1f MiB of replicated items, but its shared "
                "memory has %.1f MiB free: each of them reads all it loads from S3 instead (give /dev/shm "
                "more room, e.g. docker run --shm-size=...)",
                ranks,
                size / 2**20,
                room / 2**20,
            )
            continue
        files.extend(planned)
    return tuple(files)


def _node_files(
    plans: Sequence[LoadPlan], ranks: Sequence[int], locations: Mapping[MetadataIndex, StoredItem], token: str
) -> list[SharedFile]:
    """The files of the node whose group ranks are ``ranks``."""
    wanted: dict[ShareKey, set[int]] = {}
    sizes: dict[ShareKey, int] = {}
    for rank in ranks:
        for item in plans[rank].items:
            key = share_key(item)
            wanted.setdefault(key, set()).add(rank)
            sizes.setdefault(key, span_bytes(item, locations[item.storage_index]))
    load = dict.fromkeys(ranks, 0)
    for key, wanting in wanted.items():
        if len(wanting) == 1:
            load[next(iter(wanting))] += sizes[key]
    shared = [key for key, wanting in wanted.items() if len(wanting) > 1 and sizes[key] > 0]
    order = sorted(range(len(shared)), key=lambda i: (-sizes[shared[i]], i))
    read_by: dict[tuple[int, tuple[int, ...]], list[ShareKey]] = {}
    for i in order:
        key = shared[i]
        reader = min(wanted[key], key=lambda rank: (load[rank], rank))
        load[reader] += sizes[key]
        receivers = tuple(sorted(wanted[key] - {reader}))
        read_by.setdefault((reader, receivers), []).append(key)
    return [
        _file(
            f"{token}-{reader}-{number}",
            reader=reader,
            receivers=receivers,
            keys=keys,
            sizes=sizes,
            locations=locations,
        )
        for number, ((reader, receivers), keys) in enumerate(sorted(read_by.items()))
    ]


def _file(
    name: str,
    *,
    reader: int,
    receivers: tuple[int, ...],
    keys: list[ShareKey],
    sizes: Mapping[ShareKey, int],
    locations: Mapping[MetadataIndex, StoredItem],
) -> SharedFile:
    """The file of ``keys`` (read by ``reader`` for ``receivers``), items in stored order."""
    items: list[SharedItem] = []
    offset = 0
    for key in sorted(keys, key=lambda k: (locations[k[0]].name, locations[k[0]].offset)):
        items.append(SharedItem(key[0], key[1], key[2], offset, sizes[key]))
        offset += -(-sizes[key] // ALIGNMENT) * ALIGNMENT
    return SharedFile(name, reader, receivers, tuple(items))
