"""What each rank runs in the DCP tests (see support.ranks): sharded saves and loads on gloo CPU ranks."""

from __future__ import annotations

import json
import os
import pathlib
import signal
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import WriteItem
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from support.ranks import init_process_group

ROWS, COLS = 10, 64 * 1024  # 10 rows of 256 KiB: 5+5 on two ranks, 4+4+2 on three: a reload reshards
SAVED_RANKS = 2
BIG = 6 * 1024 * 1024 // 4  # float32 elements: more than one 5 MiB part


def full_tensor(version: int) -> torch.Tensor:
    """The global value of the sharded tensor in save ``version``."""
    return torch.arange(ROWS * COLS, dtype=torch.float32).reshape(ROWS, COLS) + 1000 * version


def own_tensor(rank: int, version: int) -> torch.Tensor:
    """The value only ``rank`` saves (under its own key) in save ``version``."""
    return torch.full((5,), float(rank + 10 * version))


def plain_state(version: int, ranks: int = SAVED_RANKS) -> dict[str, Any]:
    """The whole checkpoint of ``version`` as plain tensors (what a single process saves or loads)."""
    state: dict[str, Any] = {"sharded": full_tensor(version), "replicated": torch.ones(3) * version}
    state.update({f"rank{r}.own": own_tensor(r, version) for r in range(ranks)})
    state["step"] = version
    return state


def _mesh_state(version: int, template: bool) -> dict[str, Any]:
    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    source = torch.zeros(ROWS, COLS) if template else full_tensor(version)
    state = plain_state(version)
    state["sharded"] = distribute_tensor(source, mesh, [Shard(0)])
    if template:
        state = {
            key: torch.zeros_like(value) if isinstance(value, torch.Tensor) and key != "sharded" else value
            for key, value in state.items()
        }
        state["step"] = -1
    return state


def save(url: str, version: str) -> None:
    """Every rank saves its shard of ``version`` (a DTensor sharded over the ranks, plus its own key)."""
    init_process_group(timeout_s=60)
    rank = dist.get_rank()
    state = _mesh_state(int(version), template=False)
    state = {k: v for k, v in state.items() if not k.endswith(".own") or k == f"rank{rank}.own"}
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    dist.destroy_process_group()


def load(url: str, version: str, out_dir: str, endpoint_url: str) -> None:
    """Every rank loads ``version`` into a DTensor sharded over this (other) number of ranks and checks it;
    then ranks 1 and 2 load it again on their own subgroup (rank 0 takes no part)."""
    init_process_group(timeout_s=60)
    rank = dist.get_rank()
    state = _mesh_state(int(version), template=True)
    reader = S3StorageReader(url, endpoint_url=endpoint_url)
    dcp.load(state, storage_reader=reader)
    expected = plain_state(int(version))
    checks: dict[str, Any] = {
        "sharded": bool(torch.equal(state["sharded"].full_tensor(), expected["sharded"])),
        "replicated": bool(torch.equal(state["replicated"], expected["replicated"])),
        "own": all(torch.equal(state[f"rank{r}.own"], expected[f"rank{r}.own"]) for r in range(SAVED_RANKS)),
        "step": state["step"] == int(version),
    }
    bytes_read = reader.bytes_read
    dist.barrier()
    subgroup = dist.new_group([1, 2])
    if rank in (1, 2):
        again = {"replicated": torch.zeros(3), "step": -1}
        dcp.load(
            again, storage_reader=S3StorageReader(url, endpoint_url=endpoint_url), process_group=subgroup
        )
        checks["subgroup"] = bool(torch.equal(again["replicated"], expected["replicated"]))
    result = {"checks": checks, "bytes_read": bytes_read}
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


class _FailingPlanner(DefaultSavePlanner):
    """Rank 1 fails (raises, or is killed) when asked for its second item, with its first one uploading."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.index.fqn == "rank1.after":
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("rank 1 failed on purpose in the middle of its shard")
        return super().resolve_data(write_item)


def save_with_failing_rank(url: str, how: str, out_dir: str) -> None:
    """Both ranks save a shard larger than a part; rank 1 fails half-way (``how``: "raise" or "kill")."""
    init_process_group(timeout_s=20)
    rank = dist.get_rank()
    state = {f"rank{rank}.big": torch.ones(BIG), f"rank{rank}.after": torch.ones(4)}
    try:
        dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5), planner=_FailingPlanner(how))
    except (Exception, CheckpointException) as exc:  # the save must fail on every surviving rank
        pathlib.Path(out_dir, f"rank{rank}.failed").write_text(type(exc).__name__)
        raise


def async_save_in_process(url: str, out_dir: str) -> None:
    """Every rank saves with dcp.async_save in a background process, staged by S3AsyncStager, then loads."""
    from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

    from s3_checkpoint_io.dcp import S3AsyncStager

    init_process_group(timeout_s=90)
    rank = dist.get_rank()
    state = {f"rank{rank}.big": torch.full((BIG,), float(rank)), "step": 7}
    stager = S3AsyncStager(share_memory=True)
    future = dcp.async_save(
        state,
        storage_writer=S3StorageWriter(url, chunk_size_MB=5),
        async_checkpointer_type=AsyncCheckpointerType.PROCESS,
        async_stager=stager,
    )
    early = not future.done()
    state[f"rank{rank}.big"].add_(1000)  # after staging: must not reach the checkpoint
    future.result(timeout=120)
    stager.close()
    loaded = {f"rank{rank}.big": torch.zeros(BIG), "step": -1}
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    ok = bool(torch.equal(loaded[f"rank{rank}.big"], torch.full((BIG,), float(rank)))) and loaded["step"] == 7
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"early": early, "loaded": ok}))
    dist.barrier()
    dist.destroy_process_group()


def save_and_load(url: str, endpoint_url: str, out_dir: str) -> None:
    """Every rank saves a shard of more than one part through ``endpoint_url``, then loads it back."""
    init_process_group(timeout_s=90)
    rank = dist.get_rank()
    state = {f"rank{rank}.big": torch.arange(BIG, dtype=torch.float32) + rank, "step": 3}
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5, endpoint_url=endpoint_url))
    loaded = {f"rank{rank}.big": torch.zeros(BIG), "step": -1}
    dcp.load(loaded, storage_reader=S3StorageReader(url, chunk_size_MB=5, endpoint_url=endpoint_url))
    ok = bool(torch.equal(loaded[f"rank{rank}.big"], state[f"rank{rank}.big"])) and loaded["step"] == 3
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(ok))
    dist.barrier()
    dist.destroy_process_group()
