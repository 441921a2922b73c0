"""Small functions the launcher tests run on several ranks (see support.ranks)."""

from __future__ import annotations

import os
import pathlib
import time

import torch
import torch.distributed as dist

from support.ranks import init_process_group


def all_reduce_rank_ids(out_dir: str) -> None:
    """Each rank contributes rank + 1; every rank writes the sum it got back."""
    init_process_group(timeout_s=60)
    value = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(value)
    pathlib.Path(out_dir, f"rank{dist.get_rank()}.txt").write_text(str(int(value.item())))
    dist.destroy_process_group()


def rank_one_fails_while_rank_zero_hangs() -> None:
    """Rank 1 raises; rank 0 hangs (as a rank stuck in a collective would) far longer than a test waits."""
    if int(os.environ["RANK"]) == 1:
        raise RuntimeError("rank 1 failed on purpose")
    time.sleep(600)
