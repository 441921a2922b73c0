"""Lightning Fabric with ``S3CheckpointIO`` as its checkpoint plugin: ``fabric.save``/``fabric.load`` on S3.

The same guarantees as under the Trainer: a checkpoint appears only when complete, a failed save (sync:
raised at once; async: raised at the next save or at ``wait_for_saves``) publishes nothing and keeps the
previous one, and a new run resumes model and optimizer state exactly.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from checkpoint_io.fabric_loop import fabric_on_s3, model_and_optimizer, train, two_ranks_save_then_load
from checkpoint_io.s3_helpers import keys, wait_until_idle
from s3_checkpoint_io import BackgroundSaveError, S3CheckpointIO
from support.ranks import launch

MODES = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


def _parameters(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@MODES
def test_a_fabric_loop_saves_to_s3_and_a_new_run_resumes_exactly(
    s3_server: Any, bucket: str, s3_client: Any, asynchronous: bool
) -> None:
    dirpath = f"s3://{bucket}/fabric"
    io = S3CheckpointIO(dirpath, async_checkpointing=asynchronous)
    fabric = fabric_on_s3(io)
    model, optimizer = model_and_optimizer(fabric)
    for step in (2, 4):
        train(fabric, model, optimizer, steps=2, first_step=step - 2)
        fabric.save(f"{dirpath}/step-{step}.ckpt", {"model": model, "optimizer": optimizer, "step": step})
    expected = _parameters(model)
    train(fabric, model, optimizer, steps=2, first_step=4)  # the uninterrupted run, for comparison
    uninterrupted = _parameters(model)
    io.wait_for_saves()
    io.teardown()
    assert keys(s3_client, bucket) == {"fabric/step-2.ckpt", "fabric/step-4.ckpt"}

    io = S3CheckpointIO(dirpath, async_checkpointing=asynchronous)
    fabric = fabric_on_s3(io)
    model, optimizer = model_and_optimizer(fabric, seed=1)
    remainder = fabric.load(f"{dirpath}/step-4.ckpt", {"model": model, "optimizer": optimizer})
    assert remainder == {"step": 4}
    assert all(torch.equal(a, b) for a, b in zip(_parameters(model), expected, strict=True))
    assert optimizer.state_dict()["state"][0]["step"] == 4
    train(fabric, model, optimizer, steps=2, first_step=remainder["step"])
    assert all(torch.equal(a, b) for a, b in zip(_parameters(model), uninterrupted, strict=True))
    io.teardown()


def test_a_failed_sync_save_raises_publishes_nothing_and_keeps_the_previous(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    dirpath = f"s3://{bucket}/fabric"
    io = S3CheckpointIO(dirpath)
    fabric = fabric_on_s3(io)
    model, _ = model_and_optimizer(fabric)
    url = f"{dirpath}/latest.ckpt"
    fabric.save(url, {"model": model, "step": 1})
    # big tensors first, so parts are already uploading when pickling reaches the lock
    with pytest.raises(TypeError, match="lock"):
        fabric.save(url, {"big": torch.randn(3 * 1024 * 1024), "lock": threading.Lock(), "step": 2})
    assert keys(s3_client, bucket) == {"fabric/latest.ckpt"}
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert fabric.load(url)["step"] == 1
    io.teardown()


def test_a_failed_async_save_surfaces_at_the_next_save_and_publishes_nothing(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    dirpath = f"s3://{bucket}/fabric"
    io = S3CheckpointIO(dirpath, async_checkpointing=True)
    fabric = fabric_on_s3(io)
    model, _ = model_and_optimizer(fabric)
    fabric.save(f"{dirpath}/good.ckpt", {"model": model, "step": 1})
    # a local function deep-copies as itself: the snapshot succeeds, torch.save fails in the background
    fabric.save(f"{dirpath}/bad.ckpt", {"model": model, "fn": functools.partial(lambda: 1)})
    wait_until_idle(io)
    with pytest.raises(BackgroundSaveError, match=r"bad\.ckpt"):
        fabric.save(f"{dirpath}/next.ckpt", {"model": model, "step": 3})
    assert keys(s3_client, bucket) == {"fabric/good.ckpt"}
    assert fabric.load(f"{dirpath}/good.ckpt")["step"] == 1
    io.teardown()


def test_fabric_load_is_strict_unless_told_otherwise(s3_server: Any, bucket: str) -> None:
    dirpath = f"s3://{bucket}/fabric"
    io = S3CheckpointIO(dirpath)
    fabric = fabric_on_s3(io)
    model, optimizer = model_and_optimizer(fabric)
    url = f"{dirpath}/a.ckpt"
    fabric.save(url, {"model": model, "optimizer": optimizer})

    wider, _ = model_and_optimizer(fabric, hidden=32)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fabric.load(url, {"model": wider})
    extra = {"model": model_and_optimizer(fabric, seed=1)[0], "scheduler": {"epoch": 0}}
    with pytest.raises(KeyError, match="scheduler"):
        fabric.load(url, extra)

    partial = torch.nn.Sequential(torch.nn.Linear(8, 16))  # only the first layer of the saved model
    remainder = fabric.load(url, {"model": fabric.setup_module(partial), "scheduler": {}}, strict=False)
    assert torch.equal(partial[0].weight, model.module[0].weight)
    assert set(remainder) == {"optimizer"}
    io.teardown()


@pytest.mark.slow
@MODES
def test_two_gloo_ranks_save_on_rank_zero_and_both_load(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: Path, asynchronous: bool
) -> None:
    mode = "async" if asynchronous else "sync"
    launch(
        two_ranks_save_then_load,
        world_size=2,
        args=[f"s3://{bucket}/fabric", mode, str(tmp_path)],
        timeout_s=180,
    )
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["same_weights"] and r["remainder"] == {"step": 3} for r in reports)
    assert keys(s3_client, bucket) == {"fabric/step-3.ckpt"}
