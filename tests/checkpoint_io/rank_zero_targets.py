"""Run on each rank by tests/checkpoint_io/test_rank_zero.py (via support.ranks.launch)."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import torch.distributed as dist

from s3_checkpoint_io.rank_zero import share_from_rank_zero
from support.ranks import init_process_group


def share_outcomes(out_dir: str) -> None:
    """Share a result, a picklable error and an unpicklable one; write what each rank got."""
    init_process_group()
    rank = int(os.environ["RANK"])
    calls: list[int] = []

    def result() -> str:
        calls.append(rank)
        return f"from rank {rank}"

    class LocalDenied(PermissionError):  # defined in a function: pickle cannot find it on other ranks
        pass

    def denied() -> str:
        raise LocalDenied("s3://b/k: access denied")

    def missing() -> str:
        raise FileNotFoundError("s3://b/k: no such key")

    outcome: dict[str, Any] = {"result": share_from_rank_zero(result, what="a test"), "calls": calls}
    for name, compute in (("denied", denied), ("missing", missing)):
        try:
            share_from_rank_zero(compute, what="a test")
        except Exception as exc:
            outcome[name] = {
                "type": type(exc).__name__,
                "bases": [c.__name__ for c in type(exc).__mro__],
                "message": str(exc),
                "notes": getattr(exc, "__notes__", []),
            }
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcome))
    dist.barrier()
    dist.destroy_process_group()
