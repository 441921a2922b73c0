"""Read a small object once per load on DCP's coordinator and broadcast it to the other ranks.

DCP calls ``StorageReader.read_metadata`` on every rank, inside ``dcp.load``, without saying which
process group the load uses. A collective on the wrong group hangs (a rank of the world that is not
loading never joins) or mixes loads (two subgroups loading different checkpoints at once), so the
group is taken from the load itself: ``dcp.load``'s ``_DistWrapper`` (its group and coordinator),
found on the call stack. When it is not there (the reader called outside ``dcp.load``, a torch whose
internals differ, ``no_dist``) every rank reads the object itself: N GETs instead of one, never a
wrong or stuck collective.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from s3_checkpoint_io.one_rank import compute_on_one_rank

_LOAD_STEP = "local_step"
"""The function of ``torch.distributed.checkpoint.state_dict_loader`` that calls ``read_metadata``."""
_SEARCH_DEPTH = 8


@dataclass(frozen=True)
class LoadGroup:
    """The process group of the running ``dcp.load`` and its coordinator."""

    group: dist.ProcessGroup | None
    coordinator: int
    """The coordinator's global rank (what ``broadcast_object_list`` takes as ``src``)."""
    is_coordinator: bool


def current_load_group() -> LoadGroup | None:
    """The group of the ``dcp.load`` this call runs in, or None if it cannot be told for sure (then
    reading on every rank is the safe choice) or the load is not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    frame = sys._getframe(1)
    for _ in range(_SEARCH_DEPTH):
        if frame is None:
            return None
        if frame.f_code.co_name == _LOAD_STEP and "state_dict_loader" in frame.f_code.co_filename:
            wrapper = frame.f_locals.get("distW")
            return _group_of(wrapper) if wrapper is not None else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _group_of(wrapper: Any) -> LoadGroup | None:
    try:
        if not wrapper.use_dist or dist.get_world_size(wrapper.group) == 1:
            return None
        return LoadGroup(wrapper.group, int(wrapper.global_coordinator_rank), bool(wrapper.is_coordinator))
    except AttributeError:  # another torch's wrapper: do not guess
        return None


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
