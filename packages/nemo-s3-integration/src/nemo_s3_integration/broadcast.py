"""Send one picklable object from one rank to all, or hand it back as is when there is no process group."""

from __future__ import annotations

import os
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")

_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")


def distributed_ready() -> bool:
    """True when a torch.distributed process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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
