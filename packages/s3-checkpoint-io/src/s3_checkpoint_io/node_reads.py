"""A checkpoint every rank loads, downloaded once per node and its bytes shared with the node's ranks.

When a DDP job resumes, every rank loads the same single-file checkpoint. Each rank downloading it
pulls ``world_size`` copies from S3 at once (1,000 ranks: 1,000 copies). Here one rank per node (the
lowest global rank on each host, grouped by ``socket.gethostname()``) downloads it, and the node's other
ranks receive its bytes over gloo: a side group made once per job (``backend="gloo"``, CPU tensors, so it
works whatever the default backend is, NCCL included), in bounded chunks broadcast straight into each
rank's own in-memory file. Each rank then ``torch.load``s its own file as a single rank does, so memory
stays one checkpoint per rank and a rank's pages are freed as its tensors are copied out. A node-local
shared file would save the copy on the wire but not memory (the shared file stays whole until the last
rank of the node is done, and no rank could free its pages while loading), and it needs every rank of
a node in one process and IPC namespace; gloo only needs the network the job already uses. Hosts with
distinct names on one machine (one container per rank) read once each: more reads, never wrong bytes.

When a load is collective is the caller's call, never guessed: a collective that one rank enters alone
hangs. :func:`read_once_per_node` is only called where every rank of the default group calls in
together (``S3CheckpointIO.load_checkpoint_on_every_rank``, or inside ``S3CheckpointIO.every_rank_loads``,
which ``S3ModelCheckpoint`` and the NeMo connector arm for Lightning's resume). One collective gathers
the URL each rank asks for first: ranks asking for different checkpoints all raise, none hangs.

Failures reach every rank (:func:`~s3_checkpoint_io.one_rank.compute_on_ranks`): a reader's error
(missing object, access denied, S3 errors past their retries) is raised on every rank as the same kind
of error, with a note naming the reading rank. A reader that dies mid-download (SIGKILL, OOM killer)
closes its gloo connections; the ranks waiting on it raise
:class:`~s3_checkpoint_io.errors.NodeReaderLostError` naming the reading rank and the URL, instead of
waiting out the collective's timeout (30 minutes by default). Every node's reader downloads the version
its HEAD saw; the ETags are compared across nodes, and a checkpoint overwritten while the nodes read it
is refused on every rank. A corrupt checkpoint is found by each rank's own ``torch.load`` of the same
bytes, so every rank raises it.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from s3_checkpoint_io.engine.memory_file import MemoryFile
from s3_checkpoint_io.errors import NodeReaderLostError
from s3_checkpoint_io.one_rank import Outcome, compute_on_ranks, node_readers, raised_from
from s3_utils import ObjectInfo, S3ObjectChangedError
from s3_utils.limits import MiB

BROADCAST_CHUNK_BYTES = 64 * MiB
"""Bytes of one gloo broadcast: the file is sent in pieces this large, each straight from the reader's
file into each receiver's."""


@dataclass(frozen=True)
class JobGroups:
    """The gloo groups a shared read uses, made once per default process group.

    Attributes:
        world: every rank (the default group itself when it is gloo).
        node: this node's ranks (``world`` when the job has one node).
        reader: the global rank that reads for this node.
        readers: every node's reader, by node.
        made_for: the default group these belong to.
    """

    world: dist.ProcessGroup
    node: dist.ProcessGroup
    reader: int
    readers: tuple[int, ...]
    made_for: object


_job_groups: JobGroups | None = None


def job_groups() -> JobGroups:
    """This job's :class:`JobGroups`, made on the first call (a collective then: every rank calls it)."""
    global _job_groups
    default = dist.group.WORLD
    if _job_groups is not None and _job_groups.made_for is default:
        return _job_groups
    assert isinstance(default, dist.ProcessGroup)
    world = default if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    hosts: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname(), group=world)
    nodes = node_readers([str(host) for host in hosts])
    if len(nodes) == 1:
        node = world
    else:
        subgroup, _ = dist.new_subgroups_by_enumeration(nodes, backend="gloo")  # type: ignore[no-untyped-call]
        node = subgroup
    rank = dist.get_rank()
    reader = next(ranks[0] for ranks in nodes if rank in ranks)
    _job_groups = JobGroups(world, node, reader, tuple(ranks[0] for ranks in nodes), default)
    return _job_groups


def read_once_per_node(url: str, read: Callable[[], tuple[MemoryFile, ObjectInfo]]) -> MemoryFile:
    """Run ``read`` on one rank per node and give every rank its own in-memory file of the same bytes.

    A collective over the default process group: every rank must call it, for the same ``url``.

    Args:
        url: the checkpoint every rank loads (for the check that all ask for the same, and messages).
        read: downloads ``url`` into a new :class:`MemoryFile`; returns it and what its HEAD saw.

    Returns:
        This rank's file, holding the object's bytes; the caller closes it.

    Raises:
        ValueError: if the ranks asked for different checkpoints (on every rank).
        Exception: a reader's error (the reading rank named in a note), on every rank.
        S3ObjectChangedError: if the nodes' readers saw different versions of ``url``.
        NodeReaderLostError: if a rank stopped answering (killed) before every rank had the bytes.
    """
    groups = job_groups()
    _require_same_url(url, groups)
    what = f"downloading {url} for its node"
    files: list[MemoryFile] = []
    try:
        outcomes = _read_on_readers(url, read, files, groups)
        failed = sorted(rank for rank, outcome in outcomes.items() if outcome.failure is not None)
        if failed:
            own = outcomes[failed[0]].own_error
            failure = outcomes[failed[0]].failure
            assert failure is not None
            raise own if own is not None else raised_from(failure, failed[0], what)
        versions = {rank: outcome.value for rank, outcome in outcomes.items()}
        _require_one_version(url, versions)
        reader_saw = versions[groups.reader]
        assert reader_saw is not None
        if not files:
            files.append(MemoryFile(reader_saw[0]))
        _share_bytes(url, files[0], groups)
    except BaseException:
        for file in files:
            file.close()
        raise
    return files[0]


def _require_same_url(url: str, groups: JobGroups) -> None:
    asked: list[object] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(asked, url, group=groups.world)
    except RuntimeError as exc:
        raise _lost(url, groups, exc) from exc
    different = {rank: other for rank, other in enumerate(asked) if other != url}
    if different:
        raise ValueError(
            f"the ranks asked to load different checkpoints at once: this rank {url}, others "
            f"{different}; a collective load needs every rank to load the same one"
        )


def _read_on_readers(
    url: str,
    read: Callable[[], tuple[MemoryFile, ObjectInfo]],
    files: list[MemoryFile],
    groups: JobGroups,
) -> dict[int, Outcome[tuple[int, str]]]:
    reading = dist.get_rank() == groups.reader
    try:
        return compute_on_ranks(
            functools.partial(_read_into, read, files), computes=reading, group=groups.world
        )
    except RuntimeError as exc:
        raise _lost(url, groups, exc) from exc


def _read_into(read: Callable[[], tuple[MemoryFile, ObjectInfo]], files: list[MemoryFile]) -> tuple[int, str]:
    file, info = read()
    files.append(file)
    return file.size, info.etag


def _require_one_version(url: str, versions: dict[int, tuple[int, str] | None]) -> None:
    etags = {rank: value[1] for rank, value in versions.items() if value is not None}
    if len(set(etags.values())) > 1:
        raise S3ObjectChangedError(
            f"{url} was overwritten while the nodes downloaded it (ETag by reading rank: {etags}); "
            "every rank must load one version: resume again"
        )


def _share_bytes(url: str, file: MemoryFile, groups: JobGroups) -> None:
    """Broadcast the reader's file into every other rank's of the node, chunk by chunk."""
    if file.size == 0 or dist.get_world_size(groups.node) == 1:
        return
    view = file.buffer()
    try:
        for start in range(0, file.size, BROADCAST_CHUNK_BYTES):
            chunk = torch.frombuffer(view[start : start + BROADCAST_CHUNK_BYTES], dtype=torch.uint8)
            dist.broadcast(chunk, src=groups.reader, group=groups.node)
            del chunk
    except RuntimeError as exc:
        raise _lost(url, groups, exc) from exc
    finally:
        view.release()


def _lost(url: str, groups: JobGroups, cause: RuntimeError) -> NodeReaderLostError:
    me = dist.get_rank()
    role = "this rank reads" if me == groups.reader else f"global rank {groups.reader} reads"
    return NodeReaderLostError(
        f"a rank stopped answering while {url} was shared for a collective load ({role} it for this "
        f"node; the readers are ranks {list(groups.readers)}): {cause}. Look in the other ranks' logs "
        "for why one exited (killed, out of memory, a failed download)",
        url=url,
        reader=groups.reader,
    )
