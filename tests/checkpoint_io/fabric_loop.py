"""A tiny Lightning Fabric training loop saving to S3, shared by the Fabric tests and their rank targets."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
from lightning.fabric import Fabric

from s3_checkpoint_io import S3CheckpointIO

FEATURES = 8


def model_and_optimizer(fabric: Fabric, hidden: int = 16, seed: int = 0) -> tuple[Any, Any]:
    """A small MLP with Adam (per-parameter state to restore), set up by ``fabric``."""
    torch.manual_seed(seed)
    layers = (torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return fabric.setup(model, optimizer)


def train(fabric: Fabric, model: Any, optimizer: Any, steps: int, first_step: int = 0) -> None:
    """``steps`` optimizer steps on batches seeded by the step, so a resume continues exactly."""
    for step in range(first_step, first_step + steps):
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(8, FEATURES, generator=generator)
        loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()


def fabric_on_s3(io: S3CheckpointIO, **kwargs: Any) -> Fabric:
    """A CPU Fabric whose checkpoints go through ``io``."""
    options: dict[str, Any] = {"accelerator": "cpu", "devices": 1, **kwargs}
    return Fabric(plugins=[io], **options)


def two_ranks_save_then_load(dirpath: str, asynchronous: str, out_dir: str) -> None:
    """Rank target: DDP over gloo on two CPU processes; train, save on rank 0, load on both, report."""
    io = S3CheckpointIO(dirpath, async_checkpointing=asynchronous == "async")
    fabric = fabric_on_s3(io, devices=2, strategy="ddp")
    fabric.launch()
    model, optimizer = model_and_optimizer(fabric)
    train(fabric, model, optimizer, steps=3)
    url = f"{dirpath}/step-3.ckpt"
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 3})
    io.wait_for_saves()  # an async save is uploading on rank 0: make it durable before other ranks read
    fabric.barrier()
    fresh, fresh_optimizer = model_and_optimizer(fabric, seed=1)
    remainder = fabric.load(url, {"model": fresh, "optimizer": fresh_optimizer})
    same = all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters(), strict=True))
    report = {"rank": fabric.global_rank, "remainder": remainder, "same_weights": same}
    pathlib.Path(out_dir, f"rank{fabric.global_rank}.json").write_text(json.dumps(report))
    io.teardown()
