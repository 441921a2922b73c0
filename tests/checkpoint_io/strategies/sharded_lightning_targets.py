"""Rank bodies for test_sharded_lightning.py: FSDP2 on 2 gloo CPU ranks, S3 saves."""

from __future__ import annotations

import json
import os
import pathlib
import signal
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from checkpoint_io.lit_helpers import TinyModel, data, trainer
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from s3_checkpoint_io.strategies import S3ModelParallelStrategy
from s3_utils.sharded import commit_url

LAST_NAME = "{epoch}-{step}-last"
"""One last checkpoint per step, so replacing the previous last is a removal (of a whole prefix)."""


class ShardedTinyModel(TinyModel):
    """TinyModel with every layer sharded by FSDP2 over the data-parallel ranks."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)


def _local_state(trainer_: pl.Trainer, module: pl.LightningModule) -> dict[str, torch.Tensor]:
    """This rank's shards of every parameter and of Adam's moments (DTensors' local parts)."""
    optimizer = trainer_.optimizers[0]
    found: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        found[name] = param.to_local().detach().clone()  # type: ignore[attr-defined]
        for moment in ("exp_avg", "exp_avg_sq"):
            value = optimizer.state[param][moment]
            found[f"{name}.{moment}"] = value.to_local().detach().clone()
    return found


class KillAtStep(Callback):
    """Records this rank's state when ``step`` is reached, then SIGKILLs rank 0 (the others hang)."""

    def __init__(self, step: int, out_dir: str) -> None:
        self.step, self.out_dir = step, out_dir

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            rank = trainer.global_rank
            torch.save(_local_state(trainer, pl_module), pathlib.Path(self.out_dir, f"killed-rank{rank}.pt"))
            if rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)


class RecordResume(Callback):
    """Records what a resumed rank holds when training starts."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        rank = trainer.global_rank
        torch.save(_local_state(trainer, pl_module), pathlib.Path(self.out_dir, f"resumed-rank{rank}.pt"))
        info = {"global_step": trainer.global_step, "ckpt_path": str(trainer.ckpt_path)}
        pathlib.Path(self.out_dir, f"resumed-rank{rank}.json").write_text(json.dumps(info))


def fit(dirpath: str, out_dir: str, max_steps: str, kill_at_step: str) -> None:
    """Fit on 2 CPU ranks with S3ModelParallelStrategy, a checkpoint every step (top-1 and last),
    resuming with ``ckpt_path="last"``; ``kill_at_step`` > 0 SIGKILLs rank 0 when that step begins."""
    callback = S3ModelCheckpoint(dirpath, save_top_k=1, save_last=True, every_n_train_steps=1)
    callback.CHECKPOINT_NAME_LAST = LAST_NAME
    callbacks: list[Callback] = [callback, RecordResume(out_dir)]
    if int(kill_at_step) > 0:
        callbacks.append(KillAtStep(int(kill_at_step), out_dir))
    fit_ = trainer(
        strategy=S3ModelParallelStrategy(
            data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo"
        ),
        plugins=[S3CheckpointIO(dirpath, chunk_size_MB=5)],
        devices=2,
        callbacks=callbacks,
        max_steps=int(max_steps),
        root=out_dir,
    )
    fit_.fit(ShardedTinyModel(), data(batches=16), ckpt_path="last")


class RecordingStrategy(S3ModelParallelStrategy):
    """Records, on rank 0, whether each save's commit already existed when ``save_checkpoint`` returned."""

    committed_on_return: ClassVar[list[bool]] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        super().save_checkpoint(checkpoint, filepath, storage_options)
        if self.is_global_zero:
            io = self.checkpoint_io
            assert isinstance(io, S3CheckpointIO)
            self.committed_on_return.append(io.exists(commit_url(str(filepath))))


class RecordFinal(Callback):
    """Writes this rank's final shards (and, on rank 0, what the strategy recorded)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank = trainer.global_rank
        torch.save(_local_state(trainer, pl_module), pathlib.Path(self.out_dir, f"final-rank{rank}.pt"))


class LoadNewestAtEnd(Callback):
    """At the end of training, loads the newest checkpoint (maybe still uploading) back in place."""

    def __init__(self, checkpoint: S3ModelCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.loaded_step: int | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaded = trainer.strategy.load_checkpoint(self.checkpoint.best_model_path)
        self.loaded_step = loaded["global_step"]


def fit_async(
    dirpath: str, out_dir: str, endpoint: str, max_steps: str, every_n: str, load_at_end: str
) -> None:
    """Fit on 2 CPU ranks with asynchronous sharded saves (top-1, every ``every_n`` steps) through
    ``endpoint``; ``load_at_end="1"`` loads the newest checkpoint when training ends. Writes
    ``outcome-rank<r>.json``: the error fit raised (if any), the step loaded at the end and, on rank 0,
    whether each commit existed when its save returned."""
    callback = S3ModelCheckpoint(dirpath, save_top_k=1, every_n_train_steps=int(every_n))
    load = LoadNewestAtEnd(callback)
    fit_ = trainer(
        strategy=RecordingStrategy(
            data_parallel_size=2, tensor_parallel_size=1, process_group_backend="gloo"
        ),
        plugins=[S3CheckpointIO(dirpath, async_checkpointing=True, chunk_size_MB=5, endpoint_url=endpoint)],
        devices=2,
        callbacks=[callback, RecordFinal(out_dir)] + ([load] if load_at_end == "1" else []),
        max_steps=int(max_steps),
        root=out_dir,
    )
    error = None
    try:
        fit_.fit(ShardedTinyModel(), data(batches=16))
    except Exception as caught:  # recorded for the test to assert on
        error = f"{type(caught).__name__}: {caught}"
    outcome = {
        "error": error,
        "committed_on_return": RecordingStrategy.committed_on_return,
        "loaded_step": load.loaded_step,
    }
    pathlib.Path(out_dir, f"outcome-rank{fit_.global_rank}.json").write_text(json.dumps(outcome))
