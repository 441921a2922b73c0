"""Run a computation on one rank of a process group and give every rank of it the outcome.

The outcome, not only the value: when the computing rank fails and the others waited for a value,
they would sit in the collective until its timeout (30 minutes by default) and then fail with an
unrelated message. Here the computing rank's error travels too (as a
:class:`~s3_checkpoint_io.sent_errors.SentError`), so each caller can raise it on every rank at once.
Discovery on global rank 0 (:mod:`~s3_checkpoint_io.rank_zero`) and the DCP metadata read on a load's
coordinator (:mod:`~s3_checkpoint_io.dcp._broadcast`) both go through :func:`compute_on_one_rank`; a
checkpoint read once per node (:mod:`~s3_checkpoint_io.node_reads`) goes through
:func:`compute_on_ranks`, the same with several computing ranks. :func:`raised_from` is the error a
rank raises for another rank's failure. When every rank computed and some must not go on unless all
succeeded (a rank that reads replicated DCP items for the others,
:mod:`~s3_checkpoint_io.dcp._replicated_reads`), :func:`failures_of_every_rank` gives each rank the
others' errors the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import torch.distributed as dist

from s3_checkpoint_io.sent_errors import SentError

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What the computation gave, as one rank sees it.

    Attributes:
        value: its result (None when it failed).
        failure: its error as it travelled, or None when it returned.
        own_error: on the computing rank only, the exception itself.
    """

    value: T | None
    failure: SentError | None
    own_error: Exception | None


def compute_on_one_rank(
    compute: Callable[[], T], *, src: int, group: dist.ProcessGroup | None = None
) -> Outcome[T]:
    """Run ``compute`` on global rank ``src`` only and broadcast its result or error over ``group``.

    Every rank of ``group`` (default: the default process group) must call this: it is a collective.

    Args:
        compute: what to do once; its result must pickle.
        src: the global rank that computes (a rank of ``group``).
        group: the process group to broadcast over.

    Returns:
        The outcome on this rank.
    """
    payload: list[object] = [None]
    own_error: Exception | None = None
    if dist.get_rank() == src:
        try:
            payload[0] = (compute(), None)
        except Exception as exc:
            own_error = exc
            payload[0] = (None, SentError.of(exc))
    dist.broadcast_object_list(payload, src=src, group=group)
    sent = payload[0]
    assert isinstance(sent, tuple)
    value, failure = sent
    assert failure is None or isinstance(failure, SentError)
    return Outcome(cast(T | None, value), failure, own_error)


def compute_on_ranks(
    compute: Callable[[], T], *, computes: bool, group: dist.ProcessGroup | None = None
) -> dict[int, Outcome[T]]:
    """Run ``compute`` on the ranks of ``group`` where ``computes`` is True; give every rank every outcome.

    Every rank of ``group`` must call this: it is a collective (one ``all_gather_object``).

    Args:
        compute: what those ranks do; its result must pickle.
        computes: whether this rank runs ``compute``.
        group: the process group to gather over (default: the default process group).

    Returns:
        The outcome of each computing rank, by global rank (``own_error`` set only for this rank's own).
    """
    mine: tuple[object, SentError | None] | None = None
    own_error: Exception | None = None
    if computes:
        try:
            mine = (compute(), None)
        except Exception as exc:
            own_error = exc
            mine = (None, SentError.of(exc))
    gathered: list[object] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, (dist.get_rank(), mine), group=group)
    outcomes: dict[int, Outcome[T]] = {}
    for sent in gathered:
        assert isinstance(sent, tuple)
        rank, result = sent
        if result is None:
            continue
        value, failure = result
        assert failure is None or isinstance(failure, SentError)
        own = own_error if rank == dist.get_rank() else None
        outcomes[rank] = Outcome(cast(T | None, value), failure, own)
    return outcomes


def raised_from(sent: SentError, rank: int, what: str) -> Exception:
    """The error to raise for global rank ``rank``'s failure: a copy of it, naming where it came from.

    The copy is the exception itself when it survived pickling, else its nearest built-in type (say,
    ``PermissionError`` for access denied) with its type named in the message.
    """
    copy = sent.unpickled()
    if not isinstance(copy, Exception):
        copy = sent.builtin_kind(f"{sent.qualified_name}: {sent.message}")
    copy.add_note(f"raised on global rank {rank} while {what}; every rank raises it")
    return copy


def failures_of_every_rank(
    error: Exception | None, group: dist.ProcessGroup | None = None
) -> dict[int, SentError]:
    """Give every rank of ``group`` the error each rank had (``error``: this rank's, None if it had none).

    Every rank of ``group`` must call this: it is a collective (an all-gather).

    Returns:
        ``{group rank: its error as it travelled}`` for the ranks that had one.
    """
    gathered: list[object] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, None if error is None else SentError.of(error), group=group)
    return {rank: sent for rank, sent in enumerate(gathered) if isinstance(sent, SentError)}


def node_readers(hosts: Sequence[str]) -> list[list[int]]:
    """The ranks of each node, nodes in order of their lowest rank; a node's first rank reads for it.

    Args:
        hosts: each global rank's host name, by rank.
    """
    nodes: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        nodes.setdefault(host, []).append(rank)
    return list(nodes.values())
