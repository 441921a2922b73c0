"""One rank's part of a load whose replicated items are read once per node (see ``_replicated_plan``).

In data-flow order: the rank creates the shared-memory files it writes (``_shared_memory``), reads
its own items and the replicated ones it reads for the other ranks of its node (``_shard_reader``,
copying the latter's bytes into those files as each read completes); then every rank learns whether
every rank's reads succeeded (one all-gather,
:func:`~s3_checkpoint_io.one_rank.failures_of_every_rank`), so that a failed read fails the load on
every rank with an error naming the rank that failed; then each rank maps the files it receives,
every rank learns that every rank has them open (a second all-gather), the files' names are removed,
and each rank copies its items out of the mappings as a read of its own would (to whatever device
the destination is on) and unmaps each file as soon as it is done with it.

Nothing is left in ``/dev/shm``: the names go as soon as every rank has its files open, so their
memory is freed when the last rank of the node unmaps them (or exits, killed or not); and when any
step fails (a read, a rank killed: the collective raises on the others) every surviving rank removes
every file of the load, which it can name from the plan. Only all the ranks of a node dying in the
window between creating a file and that second all-gather would leave one behind.

Memory: a node's files hold its replicated items once (the sum of the items its ranks share), in
RAM (tmpfs), from the reads until its last rank has copied them out; the reading rank also holds its
own copy in its state, as every rank does.

A rank that stops (killed) breaks the all-gathers: the backend raises on the others, which raise
:class:`~s3_checkpoint_io.errors.PeerReadError` saying so (and log it: torch's own collective after
``read_data`` may then fail with the backend's text instead).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import time
from collections.abc import Mapping, Sequence

import torch.distributed as dist
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlanner, ReadItem

from s3_checkpoint_io.dcp import _shared_memory
from s3_checkpoint_io.dcp._broadcast import LoadGroup
from s3_checkpoint_io.dcp._layout import CheckpointLayout
from s3_checkpoint_io.dcp._records import SharedFile
from s3_checkpoint_io.dcp._replicated_plan import ShareKey, share_key
from s3_checkpoint_io.dcp._shard_reader import fill_from, read_items
from s3_checkpoint_io.dcp._stored_items import StoredItem
from s3_checkpoint_io.errors import PeerReadError
from s3_checkpoint_io.one_rank import failures_of_every_rank
from s3_utils import S3Store

log = logging.getLogger(__name__)

READ_FAILED = "failed reading the items it reads for every rank"
OPEN_FAILED = "could not open the shared memory that a rank of its node read replicated items into"


def read_and_share(
    store: S3Store,
    layout: CheckpointLayout,
    items: Sequence[ReadItem],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
    *,
    shared: Sequence[SharedFile],
    group: LoadGroup,
) -> int:
    """Fill every item of this rank's plan: read its own, copy the others out of their node's files.

    Every rank of ``group`` must call this with the same ``shared``: it is a collective.

    Args:
        store: the store to read with.
        layout: where the shard objects are.
        items: this rank's read items (its whole plan).
        locations: where each stored item's bytes are.
        planner: resolves each item's destination and takes the loaded data.
        shared: the load's shared-memory files (from the coordinator's plan).
        group: the load's process group.

    Returns:
        The bytes this rank downloaded.

    Raises:
        Exception: this rank's own read error, on this rank.
        PeerReadError: on the other ranks, naming the rank whose read failed (or that could not open
            a file); on every rank, when a rank of the load stopped before every rank had its files
            open.
    """
    started = time.monotonic()
    me = dist.get_rank(group.group)
    writing = [file for file in shared if file.reader == me]
    receiving = [file for file in shared if me in file.receivers]
    received = {shared_item.key for file in receiving for shared_item in file.items}
    own = [item for item in items if share_key(item) not in received]
    try:
        error: Exception | None = None
        bytes_read = 0
        try:
            bytes_read = _read_and_write(store, layout, own, locations, planner, writing=writing)
        except Exception as exc:  # every rank must still take part in the all-gather below
            error = exc
        _require_every_rank(error, READ_FAILED, layout, shared, group)
        read_s = time.monotonic() - started
        maps: list[mmap.mmap] = []
        error = None
        try:
            for file in receiving:
                maps.append(_shared_memory.open_mapped(file.name, file.size))
        except Exception as exc:
            exc.add_note(
                f"opening the shared memory that rank {file.reader} of this load read replicated items "
                "into for this node; if ranks of one host do not share /dev/shm, load with "
                "S3StorageReader(share_replicated=False)"
            )
            error = exc
        try:
            _require_every_rank(error, OPEN_FAILED, layout, shared, group)
            _shared_memory.remove(file.name for file in shared)  # all open: freed once all unmap
            wanting: dict[ShareKey, list[ReadItem]] = {}
            for item in items:
                wanting.setdefault(share_key(item), []).append(item)
            for file, mapping in zip(receiving, maps, strict=True):
                _copy_out(file, mapping, wanting, locations, planner)
                _close(mapping)  # the last rank of the node to get here frees its memory
        finally:  # after a failure (closing twice is no error)
            for mapping in maps:
                _close(mapping)
    except BaseException:
        _shared_memory.remove(file.name for file in shared)
        raise
    log.info(
        "DCP load of %s: read %.1f MiB in %.2f s (all ranks' reads included), then copied %.1f MiB of "
        "replicated items out of shared memory in %.2f s",
        layout.prefix_url,
        bytes_read / 2**20,
        read_s,
        sum(file.size for file in receiving) / 2**20,
        time.monotonic() - started - read_s,
    )
    return bytes_read


def _read_and_write(
    store: S3Store,
    layout: CheckpointLayout,
    own: Sequence[ReadItem],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
    *,
    writing: Sequence[SharedFile],
) -> int:
    """Read ``own``, copying the items of the files in ``writing`` into those files (created here and
    unmapped before returning: their names keep them)."""
    maps: list[mmap.mmap] = []
    views: list[memoryview] = []
    try:
        places: dict[ShareKey, memoryview] = {}
        for file in writing:
            maps.append(_shared_memory.create(file.name, file.size))
            for shared_item in file.items:
                end = shared_item.offset + shared_item.length
                views.append(memoryview(maps[-1])[shared_item.offset : end])
                places[shared_item.key] = views[-1]
        copies = {item: places[share_key(item)] for item in own if share_key(item) in places}
        return read_items(store, layout, own, locations, planner, copies=copies)
    finally:
        for view in views:
            view.release()  # only slice assignments wrote through them: nothing else holds them
        for mapping in maps:
            mapping.close()


def _copy_out(
    file: SharedFile,
    mapping: mmap.mmap,
    wanting: Mapping[ShareKey, list[ReadItem]],
    locations: Mapping[MetadataIndex, StoredItem],
    planner: LoadPlanner,
) -> None:
    """Hand each item of ``file`` that this rank loads its bytes from ``mapping``.

    The views of the mapping are not released explicitly: a failed fill's traceback may still hold a
    tensor made from one, and releasing would then raise over the fill's own error; they go with
    this call's frame (see :func:`_close`)."""
    view = memoryview(mapping)
    for shared_item in file.items:
        data = view[shared_item.offset : shared_item.offset + shared_item.length]
        for item in wanting.get(shared_item.key, ()):
            fill_from(item, locations[item.storage_index], data, planner)


def _close(mapping: mmap.mmap) -> None:
    """Unmap ``mapping`` now; where a view of it is still alive (an error's traceback holding one),
    it is unmapped when that is collected instead."""
    with contextlib.suppress(BufferError):
        mapping.close()


def _require_every_rank(
    error: Exception | None,
    what: str,
    layout: CheckpointLayout,
    shared: Sequence[SharedFile],
    group: LoadGroup,
) -> None:
    """Raise on every rank if any rank of ``group`` had an ``error`` (this rank its own, the others a
    :class:`PeerReadError` naming the first that failed, and ``what`` it did)."""
    try:
        failures = failures_of_every_rank(error, group.group)
    except RuntimeError as exc:
        raise _stopped(exc, layout, shared) from exc
    if error is not None:
        raise error
    if failures:
        rank, failure = min(failures.items())
        raise PeerReadError(
            f"rank {rank} of the load of {layout.prefix_url} (global rank {_global_rank(group, rank)}) "
            f"{what} ({failure.description}); no rank can finish this load, see that rank's error",
            rank,
        ) from failure.unpickled()


def _global_rank(group: LoadGroup, rank: int) -> int:
    return rank if group.group is None else dist.get_global_rank(group.group, rank)


def _stopped(exc: RuntimeError, layout: CheckpointLayout, shared: Sequence[SharedFile]) -> PeerReadError:
    """The error every surviving rank raises when the exchange broke (a rank of the load stopped)."""
    readers = sorted({file.reader for file in shared})
    error = PeerReadError(
        f"the ranks loading {layout.prefix_url} could not exchange the replicated items that ranks "
        f"{readers} read for their nodes ({type(exc).__name__}: {exc}): a rank of the load stopped "
        "(killed, out of memory?); see the first rank that failed",
        None,
    )
    log.error("%s", error)
    return error
