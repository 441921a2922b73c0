"""Functions run on each rank by ``support.ranks.launch`` for the broadcast and discovery tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from support.ranks import init_process_group


def _leave_process_group() -> None:
    # Exiting with a live gloo group can abort the interpreter at shutdown ("terminate called ...").
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def broadcast_main(out_dir: str) -> None:
    """Every rank offers its own value; every rank must end up with rank 0's."""
    from s3_checkpoint_io.rank_zero import broadcast_object, is_global_rank_zero

    init_process_group()
    rank = int(os.environ["RANK"])
    value = broadcast_object({"from": rank, "path": f"s3://b/rank{rank}.ckpt"})
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"value": value, "zero": is_global_rank_zero()}))
    _leave_process_group()


def check_resume_main(out_dir: str, dirpath: str, resume_past_end: str) -> None:
    """With a process group up, rank 0's discovery result (or its error) reaches every rank."""
    from nemo_s3_integration.resume import rank_zero_check_resume

    init_process_group()
    rank = int(os.environ["RANK"])
    calls: list[tuple[Any, ...]] = []
    wrapped = rank_zero_check_resume(lambda *args: calls.append(args))
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=None))
    try:
        wrapped(trainer, "/logs", True, resume_past_end == "1", False, dirpath, None)
        outcome: dict[str, Any] = {"nemo_called_with": [list(map(str, call[2:])) for call in calls]}
    except ValueError as exc:
        outcome = {"error": str(exc)}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcome))
    _leave_process_group()


def check_resume_failure_main(out_dir: str, dirpath: str) -> None:
    """Discovery fails on rank 0 (not a not-found): every rank must raise the same kind of error."""
    import time

    from nemo_s3_integration.resume import rank_zero_check_resume

    init_process_group(timeout_s=120)
    rank = int(os.environ["RANK"])
    wrapped = rank_zero_check_resume(lambda *args: None)
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=None))
    started = time.monotonic()
    try:
        wrapped(trainer, "/logs", True, False, False, dirpath, None)
        outcome: dict[str, Any] = {"error": None}
    except Exception as exc:
        outcome = {
            "error": type(exc).__name__,
            "permission": isinstance(exc, PermissionError),
            "message": str(exc),
            "notes": getattr(exc, "__notes__", []),
        }
    outcome["seconds"] = time.monotonic() - started
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcome))
    _leave_process_group()
