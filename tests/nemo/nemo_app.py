"""A minimal NeMo training script, as a user writes it, for the tests (also run as one process per rank).

The config is the seed YAML verbatim (``SEED_YAML``), with a test overlay for what a real script takes
from its own YAML (log dir, resume flags, checkpoint cadence, trainer size).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

SEED_YAML = """\
exp_manager:
  checkpoint_callback_params:
    dirpath: s3://bucket/run/checkpoints
s3_checkpointing:
  max_write_concurrency: 10   # write_concurrency * tp * pp * 1.15 within 3500 PUT/s per prefix
  max_read_concurrency: 15    # read_concurrency * tp * pp * 1.15 within 5500 GET/s per prefix
  chunk_size_MB: 64
  enable_async_checkpointing: False
"""
SEED_DIRPATH = "s3://bucket/run/checkpoints"


class TinyRegression(pl.LightningModule):
    """y = x @ w on fixed random data: small, deterministic, with optimizer state to restore."""

    def __init__(self, extra_floats: int = 0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        # Untrained bulk, to make checkpoints big enough for several multipart parts.
        self.register_buffer("bulk", torch.randn(extra_floats, generator=torch.Generator().manual_seed(1)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(256, 8, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=4)


class RecordStart(Callback):
    """Remembers the step training (re)started from, after any checkpoint was restored."""

    def __init__(self) -> None:
        self.start_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_step = trainer.global_step


def config(
    log_dir: str,
    *,
    dirpath: str = SEED_DIRPATH,
    enable_async: bool = False,
    resume_past_end: bool = False,
    every_n_train_steps: int = 2,
) -> DictConfig:
    """The seed YAML plus the exp_manager settings a real script would also have."""
    cfg = OmegaConf.create(SEED_YAML)
    overlay = {
        "exp_manager": {
            "explicit_log_dir": log_dir,
            "resume_if_exists": True,
            "resume_ignore_no_checkpoint": True,
            "resume_past_end": resume_past_end,
            "create_tensorboard_logger": False,
            "create_preemption_callback": False,
            "log_step_timing": False,
            "log_tflops_per_sec_per_gpu": False,
            "seconds_to_sleep": 0,
            "checkpoint_callback_params": {
                "dirpath": dirpath,
                "filename": "run--{step}",
                "monitor": "step",
                "mode": "max",
                "save_top_k": 2,
                "every_n_train_steps": every_n_train_steps,
                "every_n_epochs": 0,
                "save_nemo_on_train_end": False,
            },
        },
        "s3_checkpointing": {"enable_async_checkpointing": enable_async},
    }
    merged = OmegaConf.merge(cfg, overlay)
    assert isinstance(merged, DictConfig)
    return merged


def trainer(devices: int, max_steps: int, callbacks: list[Callback]) -> pl.Trainer:
    """A CPU Trainer as NeMo's exp_manager wants it: no logger, no checkpoint callback of its own."""
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=DDPStrategy(process_group_backend="gloo") if devices > 1 else "auto",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def train(cfg: DictConfig, devices: int, max_steps: int, extra_floats: int = 0) -> dict[str, Any]:
    """Run a NeMo-style script: Trainer, ``s3_exp_manager``, fit. Returns what the tests check."""
    from nemo_s3_integration import s3_exp_manager

    torch.manual_seed(0)
    record = RecordStart()
    fit_trainer = trainer(devices, max_steps, [record])
    s3_exp_manager(fit_trainer, cfg)
    model = TinyRegression(extra_floats)
    fit_trainer.fit(model)
    return {
        "rank": fit_trainer.global_rank,
        "ckpt_path": fit_trainer.ckpt_path,
        "start_step": record.start_step,
        "end_step": fit_trainer.global_step,
        "weight_sum": float(model.layer.weight.detach().sum()),
        "bulk_sum": float(model.bulk.sum()),
    }


def rank_main(out_dir: str, log_dir: str, dirpath: str, max_steps: str, resume_past_end: str) -> None:
    """Entry point for one rank under ``support.ranks.launch``: train, then write this rank's result."""
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("nemo_s3_integration").setLevel(logging.INFO)
    world = int(os.environ["WORLD_SIZE"])
    cfg = config(log_dir, dirpath=dirpath, resume_past_end=resume_past_end == "1")
    result = train(cfg, devices=world, max_steps=int(max_steps))
    Path(out_dir, f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))
    sys.stdout.flush()


def nemo_only_rank_main(log_dir: str, dirpath: str) -> None:
    """NeMo 3.0.0's own exp_manager resume discovery on one rank (no nemo_s3_integration), for docs."""
    from nemo.utils.exp_manager import exp_manager

    cfg = config(log_dir, dirpath=dirpath)
    fit_trainer = trainer(int(os.environ["WORLD_SIZE"]), 1, [])
    exp_manager(fit_trainer, cfg.exp_manager)
    print(f"rank {os.environ['RANK']} resume path: {fit_trainer.ckpt_path}", flush=True)


def discovery_rank_main(log_dir: str, dirpath: str) -> None:
    """``s3_exp_manager``'s resume discovery on one rank, then the broadcast at fit set-up, for docs."""
    from nemo_s3_integration import s3_exp_manager

    fit_trainer = trainer(int(os.environ["WORLD_SIZE"]), 1, [])
    s3_exp_manager(fit_trainer, config(log_dir, dirpath=dirpath))
    print(f"rank {os.environ['RANK']} resume path before fit: {fit_trainer.ckpt_path}", flush=True)
