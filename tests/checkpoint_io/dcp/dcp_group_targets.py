"""What each rank runs in test_dcp_metadata_group (see support.ranks): loads with an explicit group."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

import s3_checkpoint_io.dcp.reader as reader_module
from checkpoint_io.dcp.dcp_rank_targets import plain_state
from s3_checkpoint_io.dcp import S3StorageReader
from support.ranks import init_process_group


def _no_frame_read() -> Any:
    raise AssertionError("a reader given process_group= must not look for dcp.load's group")


def load_with_explicit_groups(url: str, out_dir: str, endpoint_url: str) -> None:
    """Every rank loads ``url`` over WORLD, then ranks 1 and 2 over their subgroup, each reader given
    the group; the stack search for dcp.load's group is replaced by a failure."""
    init_process_group(timeout_s=60)
    reader_module.group_of_running_load = _no_frame_read  # type: ignore[assignment]
    rank = dist.get_rank()
    expected = plain_state(1)
    world = {"replicated": torch.zeros(3), "step": -1}
    reader = S3StorageReader(url, endpoint_url=endpoint_url, process_group=dist.group.WORLD)
    dcp.load(world, storage_reader=reader, process_group=dist.group.WORLD)
    checks: dict[str, Any] = {"world": bool(torch.equal(world["replicated"], expected["replicated"]))}
    subgroup = dist.new_group([1, 2])
    if rank in (1, 2):
        again = {"replicated": torch.zeros(3), "step": -1}
        reader = S3StorageReader(url, endpoint_url=endpoint_url, process_group=subgroup)
        dcp.load(again, storage_reader=reader, process_group=subgroup)
        checks["subgroup"] = bool(torch.equal(again["replicated"], expected["replicated"]))
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(checks))
    dist.barrier()
    dist.destroy_process_group()
