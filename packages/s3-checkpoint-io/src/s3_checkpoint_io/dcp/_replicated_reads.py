"""One rank's part of a load whose replicated items are read once (see ``_replicated_plan``).

In data-flow order: the rank reads its own items and the replicated ones it reads for every rank
(``_shard_reader``, keeping the latter's bytes: the destination tensor itself when it holds them as
stored, else a copy); then every rank learns whether every rank's reads succeeded (one all-gather,
:func:`~s3_checkpoint_io.one_rank.failures_of_every_rank`), so that a failed read fails the load on
every rank with an error naming the rank that failed, before any rank waits in a broadcast for bytes
that will never come; then the broadcasts run in the plan's order, each one buffer of at most one
chunk (an item larger than a chunk is sent chunk by chunk), and the receivers hand each item its
bytes as a read of their own would. A broadcast that every other rank receives is one
``dist.broadcast``; one for fewer ranks (HSDP's replica groups) is a point-to-point send to each of
them, which the other ranks skip (every rank runs the same sequence, so each send meets its receive).

The transfers go over the load's process group: CPU tensors where it has gloo, through the current
CUDA device where it is NCCL only. A rank that stops (killed) breaks the collective: the backend
raises on the others, which raise :class:`~s3_checkpoint_io.errors.PeerReadError` saying so (and log
it: torch's own collective after ``read_data`` may then fail with the backend's text instead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlanner, ReadItem

from s3_checkpoint_io.dcp._broadcast import LoadGroup
from s3_checkpoint_io.dcp._layout import CheckpointLayout
from s3_checkpoint_io.dcp._records import Broadcast
from s3_checkpoint_io.dcp._replicated_plan import ShareKey, share_key
from s3_checkpoint_io.dcp._shard_reader import KeptBytes, destination_holding, fill_from, read_items
from s3_checkpoint_io.dcp._stored_items import StoredItem
from s3_checkpoint_io.errors import PeerReadError
from s3_checkpoint_io.one_rank import failures_of_every_rank
from s3_utils import S3Store
from s3_utils.download import chunk_ranges

log = logging.getLogger(__name__)


def transport_device(group: LoadGroup) -> torch.device | None:
    """The device broadcast buffers go through on ``group``: the CPU with gloo, the current CUDA
    device with NCCL; None for another backend (then every rank reads its items itself)."""
    backend = str(dist.get_backend(group.group))
    if "gloo" in backend or backend == "mpi":
        return torch.device("cpu")
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return None


def read_and_share(
    store: S3Store,
    layout: CheckpointLayout,
    items: Sequence[ReadItem],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
    *,
    broadcasts: Sequence[Broadcast],
    group: LoadGroup,
) -> int:
    """Fill every item of this rank's plan: read its own, receive the others from their readers.

    Every rank of ``group`` must call this with the same ``broadcasts``: it is a collective.

    Args:
        store: the store to read with; its chunk size also bounds one broadcast.
        layout: where the shard objects are.
        items: this rank's read items (its whole plan).
        locations: where each stored item's bytes are.
        planner: resolves each item's destination and takes the loaded data.
        broadcasts: the load's broadcasts (from the coordinator's plan).
        group: the load's process group.

    Returns:
        The bytes this rank downloaded.

    Raises:
        Exception: this rank's own read error, on this rank.
        PeerReadError: on the other ranks, naming the rank whose read failed; on every rank, when a
            rank of the load stopped during the exchange.
    """
    started = time.monotonic()
    me = dist.get_rank(group.group)
    source_of = {shared.key: broadcast.source for broadcast in broadcasts for shared in broadcast.items}
    own = [item for item in items if source_of.get(share_key(item), me) == me]
    sent = {item for item in own if share_key(item) in source_of}
    error: Exception | None = None
    kept: dict[ShareKey, KeptBytes] = {}
    bytes_read = 0
    try:
        result = read_items(store, layout, own, locations, planner, keep=sent)
        kept = {share_key(item): data for item, data in result.kept.items()}
        bytes_read = result.bytes_read
    except Exception as exc:  # every rank must still take part in the all-gather below
        error = exc
    try:
        failures = failures_of_every_rank(error, group.group)
    except RuntimeError as exc:
        raise _stopped(exc, layout, broadcasts) from exc
    if error is not None:
        raise error
    if failures:
        rank, failure = min(failures.items())
        raise PeerReadError(
            f"rank {rank} of the load of {layout.prefix_url} (global rank "
            f"{_global_rank(group, rank)}) failed reading the items it reads for every rank "
            f"({failure.description}); no rank can finish this load, see that rank's error",
            rank,
        ) from failure.unpickled()
    received: dict[ShareKey, list[ReadItem]] = {}
    for item in items:
        if source_of.get(share_key(item), me) != me:
            received.setdefault(share_key(item), []).append(item)
    device = transport_device(group)
    assert device is not None, "the coordinator plans broadcasts only where they can run"
    chunk = store.transfer_config.chunk_size
    read_s = time.monotonic() - started
    moved = 0
    for broadcast in broadcasts:
        if broadcast.source != me and me not in broadcast.receivers:
            continue  # a transfer between other ranks
        sending = broadcast.source == me
        destination = None if sending else _destination(broadcast, received, locations, planner)
        buffer: bytearray | None = None
        if sending:
            payload = _payload(broadcast, kept)
        elif destination is not None:
            payload = _bytes_of(destination[1])
        else:
            buffer = bytearray(broadcast.size)
            payload = torch.frombuffer(buffer, dtype=torch.uint8)
        try:
            _transfer(payload, broadcast, group, device, chunk)
        except RuntimeError as exc:
            raise _stopped(exc, layout, broadcasts) from exc
        moved += broadcast.size
        if destination is not None:
            planner.commit_tensor(*destination)
        elif buffer is not None:
            view = memoryview(buffer)
            for shared in broadcast.items:
                data = view[shared.offset : shared.offset + shared.length]
                for item in received.get(shared.key, ()):
                    fill_from(item, locations[item.storage_index], data, planner)
    log.info(
        "DCP load of %s: read %.1f MiB in %.2f s (all ranks' reads included), then sent or received "
        "%.1f MiB of replicated items in %.2f s",
        layout.prefix_url,
        bytes_read / 2**20,
        read_s,
        moved / 2**20,
        time.monotonic() - started - read_s,
    )
    return bytes_read


def _destination(
    broadcast: Broadcast,
    received: Mapping[ShareKey, list[ReadItem]],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
) -> tuple[ReadItem, torch.Tensor] | None:
    """The one item of ``broadcast`` this rank wants and the destination tensor to receive it straight
    into, when there is exactly one and its memory is the stored bytes; else None (a buffer, then
    copies)."""
    if len(broadcast.items) != 1:
        return None
    wanting = received.get(broadcast.items[0].key, [])
    if len(wanting) != 1:
        return None
    item = wanting[0]
    target = destination_holding(item, locations[item.storage_index], planner)
    return None if target is None else (item, target)


def _payload(broadcast: Broadcast, kept: Mapping[ShareKey, KeptBytes]) -> torch.Tensor:
    """What the source sends: the destination tensor it read one item into, as it is, or a buffer
    with each item's bytes at its offset."""
    if len(broadcast.items) == 1 and isinstance(data := kept[broadcast.items[0].key], torch.Tensor):
        return _bytes_of(data)
    whole = torch.frombuffer(bytearray(broadcast.size), dtype=torch.uint8)
    for shared in broadcast.items:
        data = kept[shared.key]
        source = (
            torch.frombuffer(data, dtype=torch.uint8) if isinstance(data, memoryview) else _bytes_of(data)
        )
        whole[shared.offset : shared.offset + shared.length].copy_(source)
    return whole


def _bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 tensor (a view: no copy)."""
    return tensor.detach().reshape(-1).view(torch.uint8)


def _transfer(
    payload: torch.Tensor, broadcast: Broadcast, group: LoadGroup, device: torch.device, chunk: int
) -> None:
    """Send ``payload`` (flat uint8, on any device) from ``broadcast``'s source to its receivers, at most
    ``chunk`` bytes at a time, staged through ``device`` where it lies elsewhere (on the source it holds
    the bytes; on a receiver it gets them)."""
    src = _global_rank(group, broadcast.source)
    sending = dist.get_rank(group.group) == broadcast.source
    to_all = len(broadcast.receivers) == dist.get_world_size(group.group) - 1
    for start, end in chunk_ranges(0, payload.numel(), chunk):
        piece = payload[start:end]
        if piece.device == device:
            staged = piece
        elif sending:
            staged = piece.to(device)
        else:
            staged = torch.empty(end - start, dtype=torch.uint8, device=device)
        if to_all:
            dist.broadcast(staged, src=src, group=group.group)
        elif sending:
            for receiver in broadcast.receivers:
                dist.send(staged, dst=_global_rank(group, receiver), group=group.group)
        else:
            dist.recv(staged, src=src, group=group.group)
        if not sending and staged is not piece:
            piece.copy_(staged)


def _global_rank(group: LoadGroup, rank: int) -> int:
    return rank if group.group is None else dist.get_global_rank(group.group, rank)


def _stopped(exc: RuntimeError, layout: CheckpointLayout, broadcasts: Sequence[Broadcast]) -> PeerReadError:
    """The error every surviving rank raises when the exchange broke (a rank of the load stopped)."""
    readers = sorted({broadcast.source for broadcast in broadcasts})
    error = PeerReadError(
        f"the ranks loading {layout.prefix_url} could not exchange the replicated items that ranks "
        f"{readers} read for all ({type(exc).__name__}: {exc}): a rank of the load stopped (killed, out "
        "of memory?); see the first rank that failed",
        None,
    )
    log.error("%s", error)
    return error
