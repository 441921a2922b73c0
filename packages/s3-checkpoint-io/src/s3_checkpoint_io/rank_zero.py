"""Do S3 discovery once, on global rank 0, and give every rank its outcome: the result or the error.

A listing or HEAD on every rank multiplies requests by the world size (S3 throttles a prefix at a few
thousand requests per second), so discovery runs on global rank 0 and the outcome is broadcast. The
outcome, not only the value: when rank 0 fails (access denied, endpoint down) and the other ranks waited
for a value, they would sit in the collective until its timeout (30 minutes by default) and then fail with
an unrelated message. Here every rank raises an equivalent error as soon as rank 0 has one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar, cast

import torch.distributed as dist

from s3_checkpoint_io.one_rank import compute_on_one_rank, raised_from

log = logging.getLogger(__name__)

T = TypeVar("T")

_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def distributed_ready() -> bool:
    """True when a torch.distributed process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_global_rank_zero() -> bool:
    """True on global rank 0, also before the process group exists.

    Read from torch.distributed when it is initialised, otherwise from the launcher's environment:
    ``RANK`` (torchrun, Lightning), ``SLURM_PROCID``, ``OMPI_COMM_WORLD_RANK``, else ``NODE_RANK`` /
    ``GROUP_RANK`` with ``LOCAL_RANK`` (unset means 0, as for a single process).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value == "0"
    node = os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")).strip() or "0"
    local = os.environ.get("LOCAL_RANK", "0").strip() or "0"
    return node == "0" and local == "0"


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return ``obj`` as rank ``src`` holds it, on every rank.

    Every rank of the default process group must call this (it is a collective). Without an initialised
    process group (one process, or before Lightning sets one up) it returns ``obj`` unchanged.

    Args:
        obj: any picklable object; only rank ``src``'s value matters.
        src: the global rank whose value wins.

    Returns:
        Rank ``src``'s object.
    """
    if not distributed_ready():
        return obj
    box: list[object] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def share_from_rank_zero(
    compute: Callable[[], T], *, what: str, without_group: Callable[[], T] | None = None
) -> T:
    """Run ``compute`` on global rank 0 only and give its outcome to every rank.

    With a process group, every rank must call this (it is a collective): rank 0 runs ``compute``, then
    every rank returns its result, or raises its error (the same type and message: a copy of the error
    when it pickles, else the nearest built-in type, e.g. ``PermissionError`` for access denied).

    Without a process group (one process, or before Lightning creates it), rank 0 runs ``compute`` and the
    other ranks run ``without_group`` (default: ``compute`` itself, as they cannot be told the result).

    Args:
        compute: the discovery to do once (S3 requests); its result must pickle.
        what: what it does, for the note on the other ranks' error, e.g. ``"listing s3://b/run/"``.
        without_group: what ranks other than 0 do when there is no process group to share through.

    Returns:
        Rank 0's result.

    Raises:
        Exception: rank 0's error, on every rank.
    """
    if not distributed_ready():
        if is_global_rank_zero() or without_group is None:
            return compute()
        return without_group()
    outcome = compute_on_one_rank(compute, src=0)
    if outcome.own_error is not None:
        raise outcome.own_error
    if outcome.failure is None:
        return cast(T, outcome.value)
    log.debug("rank %d: rank 0 failed %s: %s", dist.get_rank(), what, outcome.failure.message)
    raise raised_from(outcome.failure, 0, what)
