"""A tiny deterministic Lightning model and trainer factory shared by the checkpoint_io tests."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint

FEATURES = 16


class TinyModel(pl.LightningModule):
    """A linear regression with Adam (so the optimizer has per-parameter state to restore).

    Logs ``score`` = the global step, so top-k with ``monitor="score", mode="max"`` always keeps the
    newest checkpoints and evicts the oldest: deterministic removals to assert on.
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("score", float(self.global_step), on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


def data(batches: int = 4, batch_size: int = 8) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batches * batch_size, FEATURES, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(
    *,
    plugins: Sequence[Any] = (),
    callbacks: Sequence[Callback] = (),
    max_steps: int,
    root: str,
    **kwargs: Any,
) -> pl.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": max_steps,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": root,
    }
    options.update(kwargs)
    return pl.Trainer(plugins=list(plugins), callbacks=list(callbacks), **options)


class CaptureAtTrainStart(Callback):
    """Records what the trainer holds right after a resume: weights, optimizer state, global step."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.ckpt_path: str | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ckpt_path = None if trainer.ckpt_path is None else str(trainer.ckpt_path)
        self.state = {
            "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "optimizer": _clone(trainer.optimizers[0].state_dict()),
            "global_step": trainer.global_step,
        }


def capture(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, Any]:
    """The same record as :class:`CaptureAtTrainStart`, taken now (e.g. after ``fit`` returns)."""
    return {
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": _clone(trainer.optimizers[0].state_dict()),
        "global_step": trainer.global_step,
    }


def _clone(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_clone(v) for v in obj)
    return obj


def assert_same(expected: Any, actual: Any, where: str = "state") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values, naming the first difference."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: expected a tensor, got {type(actual)}"
        assert torch.equal(expected, actual), f"{where}: tensors differ"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {type(actual)}"
        assert set(expected) == set(actual), f"{where}: keys {sorted(expected)} != {sorted(actual)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(expected) == len(actual), f"{where}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def topk_callback(dirpath: str, **overrides: Any) -> S3ModelCheckpoint:
    options: dict[str, Any] = {
        "filename": "{step}",
        "monitor": "score",
        "mode": "max",
        "save_top_k": 2,
        "save_last": True,
        "every_n_train_steps": 2,
    }
    options.update(overrides)
    return S3ModelCheckpoint(dirpath=dirpath, **options)


def trainer_on_s3(
    bucket: str,
    tmp_path: pathlib.Path,
    async_checkpointing: bool,
    max_steps: int,
    last_name: str,
    *callbacks: Callback,
) -> pl.Trainer:
    """A Trainer that keeps the top-2 and last checkpoints, every 2 steps, in ``s3://<bucket>/run``."""
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=async_checkpointing)
    callback = topk_callback(f"s3://{bucket}/run")
    callback.CHECKPOINT_NAME_LAST = last_name
    return trainer(plugins=[io], callbacks=[callback, *callbacks], max_steps=max_steps, root=str(tmp_path))


def first_run(
    bucket: str,
    tmp_path: pathlib.Path,
    async_checkpointing: bool,
    max_steps: int = 6,
    last_name: str = "last",
) -> dict[str, Any]:
    """Train ``max_steps`` with checkpoints every 2 steps; return what the trainer held at the end."""
    model = TinyModel()
    fit = trainer_on_s3(bucket, tmp_path, async_checkpointing, max_steps, last_name)
    fit.fit(model, data())
    return capture(fit, model)


def resume(
    bucket: str,
    tmp_path: pathlib.Path,
    async_checkpointing: bool,
    ckpt_path: str,
    max_steps: int = 8,
    last_name: str = "last",
) -> CaptureAtTrainStart:
    seen = CaptureAtTrainStart()
    fit = trainer_on_s3(bucket, tmp_path, async_checkpointing, max_steps, last_name, seen)
    fit.fit(TinyModel(), data(), ckpt_path=ckpt_path)
    return seen
