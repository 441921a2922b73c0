"""The one place that reads torch internals to find the process group of the running ``dcp.load``.

DCP calls ``StorageReader.read_metadata`` on every rank without saying which process group the load
uses, and torch (tested on :data:`TESTED_ON_TORCH`) has no public way to ask. A reader built without
``process_group=`` (:class:`~s3_checkpoint_io.dcp.reader.S3StorageReader`) therefore finds it here:
the ``distW`` local (a ``_DistWrapper``: group and coordinator) of
``torch.distributed.checkpoint.state_dict_loader``'s ``local_step``, found on the call stack. A
reader given ``process_group=`` never comes here.

When it cannot be found (the reader called outside ``dcp.load``, a torch whose internals differ) the
caller reads on every rank (N GETs instead of one, never a wrong or stuck collective), and a warning
is logged once per process, so that a rename in torch does not silently multiply the GETs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
import torch.distributed as dist

from s3_checkpoint_io.dcp._broadcast import LoadGroup

log = logging.getLogger(__name__)

TESTED_ON_TORCH = "2.13.0"
"""The torch release whose ``dcp.load`` internals this module is tested against."""
_LOAD_STEP = "local_step"
"""The function of ``torch.distributed.checkpoint.state_dict_loader`` that calls ``read_metadata``."""
_LOADER_FILE = "state_dict_loader"
_WRAPPER_LOCAL = "distW"
_SEARCH_DEPTH = 8

_warned = False


def group_of_running_load() -> LoadGroup | None:
    """The group of the ``dcp.load`` this call runs in, or None if it cannot be told for sure (then
    reading on every rank is the safe choice) or the load is not distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    frame = sys._getframe(1)
    for _ in range(_SEARCH_DEPTH):
        if frame is None:
            break
        if frame.f_code.co_name == _LOAD_STEP and _LOADER_FILE in frame.f_code.co_filename:
            wrapper = frame.f_locals.get(_WRAPPER_LOCAL)
            if wrapper is None:
                break
            return _group_of(wrapper)
        frame = frame.f_back  # type: ignore[assignment]
    _warn_once(f"found no {_LOAD_STEP}() frame of dcp.load with a {_WRAPPER_LOCAL!r} local")
    return None


def _group_of(wrapper: Any) -> LoadGroup | None:
    try:
        if not wrapper.use_dist or dist.get_world_size(wrapper.group) == 1:
            return None
        return LoadGroup(wrapper.group, int(wrapper.global_coordinator_rank))
    except AttributeError as exc:  # another torch's wrapper: do not guess
        _warn_once(f"dcp.load's {_WRAPPER_LOCAL} has no {exc.name!r}")
        return None


def _warn_once(why: str) -> None:
    global _warned
    if _warned or dist.get_world_size() == 1:
        return
    _warned = True
    log.warning(
        "S3StorageReader: %s (tested on torch %s, running %s), so every rank GETs the DCP metadata "
        "itself instead of one GET per load; pass process_group= (the group given to dcp.load, "
        "torch.distributed.group.WORLD for the default one) to S3StorageReader to broadcast it",
        why,
        TESTED_ON_TORCH,
        torch.__version__,
    )
