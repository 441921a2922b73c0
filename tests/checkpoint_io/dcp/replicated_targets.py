"""What each rank runs in the replicated-read tests (see support.ranks): a DDP-like state loaded on every
rank, its replicated items read once; a reading rank killed or refused mid-read."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner
from torch.futures import Future

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp._records import LoadInstruction
from s3_checkpoint_io.dcp._shared_memory import path_of
from support.ranks import init_process_group

RANKS = 3
KILLED_RANK = 1
KILL_AFTER_S = 0.5


def replicated_state() -> dict[str, Any]:
    """What every rank holds alike (a DDP model and its step): large tensors read straight into their
    destination, small ones through a buffer, another dtype, and a non-tensor item."""
    return {
        "layer0.weight": torch.arange(512 * 1024, dtype=torch.float32),  # 2 MiB
        "layer1.weight": torch.linspace(-1, 1, 384 * 1024).reshape(384, 1024),  # 1.5 MiB
        "layer1.bias": torch.arange(256, dtype=torch.float32) * -1,
        "embedding": (torch.arange(768 * 1024) % 97).to(torch.bfloat16),  # 1.5 MiB
        "step": 41,
    }


def own_tensor(rank: int) -> torch.Tensor:
    """The 512 KiB only ``rank`` saves."""
    return torch.full((128 * 1024,), float(rank + 1))


def full_state() -> dict[str, Any]:
    """Everything the checkpoint holds: the replicated state and each rank's own tensor."""
    return {**replicated_state(), **{f"rank{r}.own": own_tensor(r) for r in range(RANKS)}}


def loaded_keys(rank: int) -> list[str]:
    """What ``rank`` loads: the replicated state, its own tensor and its right neighbour's (so each
    rank-own tensor is wanted by two ranks)."""
    return [*replicated_state(), f"rank{rank}.own", f"rank{(rank + 1) % RANKS}.own"]


def checkpoint_bytes() -> int:
    """The tensor bytes of the whole checkpoint."""
    return sum(v.numel() * v.element_size() for v in full_state().values() if isinstance(v, torch.Tensor))


def model_state(mib: int) -> dict[str, Any]:
    """A replicated model of ``mib`` MiB in 4 MiB tensors (for the measurement in bench/)."""
    return {f"layer{i}.weight": torch.full((1024 * 1024,), float(i)) for i in range(max(1, mib // 4))}


def _template(expected: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {key: torch.zeros_like(v) if isinstance(v := expected[key], torch.Tensor) else -1 for key in keys}


def _equal(state: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(
        bool(torch.equal(value, expected[key])) if isinstance(value, torch.Tensor) else value == expected[key]
        for key, value in state.items()
    )


class RecordingReader(S3StorageReader):
    """Records the shared-memory files of its load (their paths, which file this rank reads for
    others) as ``read_data`` starts."""

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        instruction = plan.storage_data
        assert isinstance(instruction, LoadInstruction)
        self.shared_paths = [path_of(file.name) for file in instruction.shared]
        self.readers = sorted({file.reader for file in instruction.shared})
        return super().read_data(plan, planner)


def save_then_load_twice(
    url: str, share_endpoint: str, each_endpoint: str, out_dir: str, model_mib: str = "0"
) -> None:
    """Every rank saves the DDP-like state and its own tensor (``model_mib`` > 0: a model of that many
    MiB instead), then loads it through ``share_endpoint`` with replicated items shared, and again
    through ``each_endpoint`` with every rank reading all it loads itself."""
    init_process_group(timeout_s=120)
    rank = dist.get_rank()
    mib = int(model_mib)
    if mib:
        expected, keys = model_state(mib), list(model_state(mib))
        saved = expected
    else:
        expected, keys = full_state(), loaded_keys(rank)
        saved = {**replicated_state(), f"rank{rank}.own": own_tensor(rank)}
    dcp.save(saved, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    result: dict[str, Any] = {}
    for name, endpoint, share in (("shared", share_endpoint, True), ("each", each_endpoint, False)):
        state = _template(expected, keys)
        reader = RecordingReader(url, endpoint_url=endpoint, chunk_size_MB=5, share_replicated=share)
        started = time.monotonic()
        dcp.load(state, storage_reader=reader)
        result[name] = {
            "equal": _equal(state, expected),
            "bytes_read": reader.bytes_read,
            "seconds": time.monotonic() - started,
            "shared_paths": reader.shared_paths,
        }
        dist.barrier()
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


class _KilledWhileReading(RecordingReader):
    """On :data:`KILLED_RANK`, SIGKILLs its own process :data:`KILL_AFTER_S` into ``read_data`` (its
    GETs are delayed by the proxy, so it dies in the middle of them)."""

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        if dist.get_rank() == KILLED_RANK:
            timer = threading.Timer(KILL_AFTER_S, os.kill, args=(os.getpid(), signal.SIGKILL))
            timer.daemon = True
            timer.start()
        return super().read_data(plan, planner)


def load_and_record_failure(url: str, endpoint: str, out_dir: str, kill: str) -> None:
    """Every rank loads the checkpoint (``kill == "1"``: rank 1 is killed while it reads) and writes
    what it raised and how long after the start of the load."""
    init_process_group(timeout_s=30)
    rank = dist.get_rank()
    kind = _KilledWhileReading if kill == "1" else RecordingReader
    reader = kind(url, endpoint_url=endpoint, chunk_size_MB=5)
    started = time.monotonic()
    try:
        dcp.load(_template(full_state(), loaded_keys(rank)), storage_reader=reader)
        outcome = {"raised": None}
    except BaseException as exc:  # DCP's CheckpointException is a BaseException
        outcome = {"raised": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.monotonic() - started
    outcome["shared_paths"] = getattr(reader, "shared_paths", [])
    outcome["readers"] = getattr(reader, "readers", [])
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(outcome))
    if outcome["raised"] is not None:
        os._exit(3)  # the group is broken: skip its teardown
    dist.destroy_process_group()
