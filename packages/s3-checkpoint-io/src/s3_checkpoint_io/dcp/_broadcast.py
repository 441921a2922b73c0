"""Read a small object once per load on DCP's coordinator and broadcast it to the other ranks.

A collective on the wrong group hangs (a rank of the world that is not loading never joins) or mixes
loads (two subgroups loading different checkpoints at once), so the broadcast uses the process group
of the load: the one given to ``S3StorageReader(process_group=...)`` (:func:`group_for`), else the
group of the running ``dcp.load`` as :mod:`~s3_checkpoint_io.dcp._torch_load_frame` finds it. When
there is none (no process group, ``no_dist``, one rank, or the group cannot be told) every rank reads
the object itself: N GETs instead of one, never a wrong or stuck collective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.distributed as dist

from s3_checkpoint_io.one_rank import compute_on_one_rank


@dataclass(frozen=True)
class LoadGroup:
    """The process group of the running ``dcp.load`` and its coordinator."""

    group: dist.ProcessGroup | None
    coordinator: int
    """The coordinator's global rank (what ``broadcast_object_list`` takes as ``src``)."""


def group_for(process_group: dist.ProcessGroup) -> LoadGroup | None:
    """The load group of a load over ``process_group``, coordinated by its rank 0; None without an
    initialised process group or when ``process_group`` has one rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(process_group) == 1:
        return None
    return LoadGroup(process_group, dist.get_global_rank(process_group, 0))


def read_once(read: Callable[[], bytes | bytearray], group: LoadGroup | None) -> bytes | bytearray:
    """``read()`` on the coordinator of ``group``, broadcast to its other ranks; on every rank if None.

    A failure on the coordinator is broadcast too, so every rank raises it (none waits forever).

    Raises:
        Exception: what ``read`` raised on the coordinator.
    """
    if group is None:
        return read()
    outcome = compute_on_one_rank(read, src=group.coordinator, group=group.group)
    if outcome.failure is None:
        assert isinstance(outcome.value, bytes | bytearray)
        return outcome.value
    if outcome.own_error is not None and outcome.failure.pickled is not None:
        raise outcome.own_error
    # a coordinator that cannot send its error raises what the others raise: its text
    raise outcome.failure.unpickled() or RuntimeError(outcome.failure.description)
