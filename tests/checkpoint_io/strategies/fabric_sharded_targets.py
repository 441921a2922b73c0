"""Rank bodies for test_fabric_sharded.py: a Fabric loop, FSDP2 on 2 gloo CPU ranks."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
from lightning.fabric import Fabric
from torch.distributed.checkpoint.api import CheckpointException

from checkpoint_io.fabric_loop import FEATURES, train
from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.strategies import S3FabricModelParallelStrategy


def _shard(model: torch.nn.Module, mesh: Any) -> torch.nn.Module:
    """The ``parallelize_fn``: every Linear, then the whole model, sharded over the data-parallel ranks."""
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh["data_parallel"])
    fully_shard(model, mesh=mesh["data_parallel"])
    return model


def _sharded_fabric(dirpath: str) -> Fabric:
    strategy = S3FabricModelParallelStrategy(
        parallelize_fn=_shard, data_parallel_size=2, tensor_parallel_size=1
    )
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy, plugins=[S3CheckpointIO(dirpath)])
    fabric.launch()
    return fabric


def _model_and_optimizer(fabric: Fabric, seed: int) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    layers = (torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    model = fabric.setup_module(torch.nn.Sequential(*layers))
    optimizer = fabric.setup_optimizers(torch.optim.Adam(model.parameters(), lr=0.01))
    return model, optimizer


def _local_state(model: Any, optimizer: Any) -> dict[str, torch.Tensor]:
    """This rank's shards of every parameter and of Adam's state (DTensors' local parts)."""
    found: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        found[name] = param.to_local().detach().clone()
        for key, value in optimizer.state[param].items():
            local = value.to_local() if hasattr(value, "to_local") else value
            found[f"{name}.{key}"] = local.detach().clone()
    return found


def first_run(dirpath: str, out_dir: str) -> None:
    """Train 3 steps, save to ``latest.ckpt``, record the state, then train on (the uninterrupted run)."""
    fabric = _sharded_fabric(dirpath)
    model, optimizer = _model_and_optimizer(fabric, seed=0)
    train(fabric, model, optimizer, steps=3)
    fabric.save(f"{dirpath}/latest.ckpt", {"model": model, "optimizer": optimizer, "step": 3})
    rank = fabric.global_rank
    torch.save(_local_state(model, optimizer), pathlib.Path(out_dir, f"saved-rank{rank}.pt"))
    train(fabric, model, optimizer, steps=2, first_step=3)
    torch.save(_local_state(model, optimizer), pathlib.Path(out_dir, f"uninterrupted-rank{rank}.pt"))


def resume_then_fail_a_save(dirpath: str, out_dir: str) -> None:
    """Load ``latest.ckpt`` into a differently seeded model, train on, try a save that S3 refuses, reload."""
    fabric = _sharded_fabric(dirpath)
    rank = fabric.global_rank
    model, optimizer = _model_and_optimizer(fabric, seed=1)
    state = {"model": model, "optimizer": optimizer, "step": 0}
    remainder = fabric.load(f"{dirpath}/latest.ckpt", state)
    torch.save(_local_state(model, optimizer), pathlib.Path(out_dir, f"loaded-rank{rank}.pt"))
    train(fabric, model, optimizer, steps=2, first_step=state["step"])
    torch.save(_local_state(model, optimizer), pathlib.Path(out_dir, f"resumed-rank{rank}.pt"))
    error = ""
    try:
        fabric.save(f"{dirpath}/latest.ckpt", {"model": model, "optimizer": optimizer, "step": 5})
    except CheckpointException as exc:  # DCP's failure (a BaseException), holding every rank's error
        error = f"{type(exc).__name__}: {exc}"
    fresh, fresh_optimizer = _model_and_optimizer(fabric, seed=2)
    again = {"model": fresh, "optimizer": fresh_optimizer, "step": 0}
    fabric.load(f"{dirpath}/latest.ckpt", again)
    torch.save(_local_state(fresh, fresh_optimizer), pathlib.Path(out_dir, f"reloaded-rank{rank}.pt"))
    report = {"remainder": remainder, "step": state["step"], "error": error, "step_again": again["step"]}
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
