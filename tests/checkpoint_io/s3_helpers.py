"""S3-side helpers for the checkpoint_io tests: listing keys, sample states, a gate that holds a save."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil
import torch

from s3_checkpoint_io import S3CheckpointIO
from support.s3_objects import object_keys


def keys(s3_client: Any, bucket: str, prefix: str = "") -> set[str]:
    """Every key in ``bucket`` under ``prefix``, straight from the server."""
    return set(object_keys(s3_client, bucket, prefix))


def state(seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(64, 32, generator=generator)
    return {
        "state_dict": {"w": weight, "w_t": weight.t(), "b": torch.zeros(32)},
        "global_step": seed,
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}],
    }


def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def has_exited(pid: int) -> bool:
    """Whether process ``pid`` has ended: gone, or a zombie (only its parent's wait is missing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_idle(io: S3CheckpointIO, timeout_s: float = 60.0) -> None:
    """Wait for background work without consuming a failure (wait_for_saves would raise it)."""
    deadline = time.monotonic() + timeout_s
    while io.busy:
        assert time.monotonic() < deadline, f"saves still pending: {io.pending_saves}"
        time.sleep(0.02)


class Gate:
    """Holds a background torch.save at this object until :meth:`open` (a deterministic slow save)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    def __deepcopy__(self, memo: Any) -> Gate:
        return self

    def __reduce__(self) -> Any:
        assert self._event.wait(30), "gate never opened"
        return (int, (0,))
