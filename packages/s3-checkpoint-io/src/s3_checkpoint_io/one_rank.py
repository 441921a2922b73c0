"""Run a computation on one rank of a process group and give every rank of it the outcome.

The outcome, not only the value: when the computing rank fails and the others waited for a value,
they would sit in the collective until its timeout (30 minutes by default) and then fail with an
unrelated message. Here the computing rank's error travels too (as a
:class:`~s3_checkpoint_io.sent_errors.SentError`), so each caller can raise it on every rank at once.
Discovery on global rank 0 (:mod:`~s3_checkpoint_io.rank_zero`) and the DCP metadata read on a load's
coordinator (:mod:`~s3_checkpoint_io.dcp._broadcast`) both go through :func:`compute_on_one_rank`.
When every rank computed and some must not go on unless all succeeded (a rank that reads replicated
DCP items for the others, :mod:`~s3_checkpoint_io.dcp._replicated_reads`), :func:`failures_of_every_rank`
gives each rank the others' errors the same way.
"""

from __future__ import annotations

from collections.abc import Callable
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
