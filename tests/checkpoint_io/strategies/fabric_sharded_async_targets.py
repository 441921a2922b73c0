"""Rank bodies for tests/checkpoint_io/test_fabric_sharded_async.py: asynchronous sharded Fabric saves,
FSDP2 on 2 gloo CPU ranks (the model, optimizer and shard helpers are test_fabric_sharded's)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
from lightning.fabric import Fabric

from checkpoint_io.fabric_loop import train
from checkpoint_io.strategies.fabric_sharded_targets import _local_state, _model_and_optimizer, _shard
from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.strategies import S3FabricModelParallelStrategy
from s3_utils.sharded import commit_url


def _same(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> bool:
    return expected.keys() == got.keys() and all(
        torch.equal(value, got[key]) for key, value in expected.items()
    )


def _loads_as_saved(fabric: Fabric, url: str, saved: dict[str, torch.Tensor], step: int) -> bool:
    """Whether a differently seeded model and optimizer loaded from ``url`` equal what was saved."""
    model, optimizer = _model_and_optimizer(fabric, seed=7)
    state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0}
    fabric.load(url, state)
    return state["step"] == step and _same(saved, _local_state(model, optimizer))


def _save(
    fabric: Fabric, io: S3CheckpointIO, trained: tuple[Any, Any], url: str, step: int, report: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """``fabric.save`` of the model and optimizer at ``step``; on rank 0 records whether the commit was
    already in S3 when it returned. Returns this rank's state as saved."""
    model, optimizer = trained
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": step})
    if fabric.global_rank == 0:
        report["committed_on_return"].append(io.exists(commit_url(url)))
    return _local_state(model, optimizer)


def save_in_the_background(dirpath: str, out_dir: str, endpoint: str) -> None:
    """Three asynchronous saves through ``endpoint`` (its commit PUTs delayed by the test): the first
    two, a removal of the first, ``wait_for_saves``, then the third and ``teardown``. Writes
    ``rank<r>.json``: on rank 0 whether each commit existed when ``fabric.save`` returned, when the
    removal returned and after each wait; on every rank whether each checkpoint loads as saved."""
    io = S3CheckpointIO(dirpath, async_checkpointing=True, endpoint_url=endpoint)
    strategy = S3FabricModelParallelStrategy(
        parallelize_fn=_shard, data_parallel_size=2, tensor_parallel_size=1
    )
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy, plugins=[io])
    fabric.launch()
    rank = fabric.global_rank
    model, optimizer = _model_and_optimizer(fabric, seed=0)
    urls = {step: f"{dirpath}/step-{step}.ckpt" for step in (2, 4, 6)}
    saved: dict[int, dict[str, torch.Tensor]] = {}
    report: dict[str, Any] = {"committed_on_return": []}

    train(fabric, model, optimizer, steps=2)
    saved[2] = _save(fabric, io, (model, optimizer), urls[2], 2, report)
    train(fabric, model, optimizer, steps=2, first_step=2)
    saved[4] = _save(fabric, io, (model, optimizer), urls[4], 4, report)
    strategy.remove_checkpoint(urls[2])  # queued behind step 4's commit
    if rank == 0:
        report["step_2_kept_by_the_removal"] = io.exists(commit_url(urls[2]))
    strategy.wait_for_saves()
    if rank == 0:
        report["after_wait"] = {step: io.exists(commit_url(urls[step])) for step in (2, 4)}
    report["step_4_loads"] = _loads_as_saved(fabric, urls[4], saved[4], 4)

    train(fabric, model, optimizer, steps=2, first_step=4)
    saved[6] = _save(fabric, io, (model, optimizer), urls[6], 6, report)
    strategy.teardown()  # waits for the save in flight
    if rank == 0:
        report["step_6_after_teardown"] = io.exists(commit_url(urls[6]))
    report["step_6_loads"] = _loads_as_saved(fabric, urls[6], saved[6], 6)
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
