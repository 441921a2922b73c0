"""Run on each rank by test_model_checkpoint_resume.py (via support.ranks.launch)."""

from __future__ import annotations

import json
import os
import pathlib

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, data, trainer
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from support.ranks import init_process_group


def resume_last_on_every_rank(dirpath: str, endpoint_url: str, out_dir: str, max_steps: str) -> None:
    """Join the process group, then fit with ckpt_path="last"; write the step each rank resumed at."""
    init_process_group()
    rank = int(os.environ["RANK"])
    io = S3CheckpointIO(dirpath, endpoint_url=endpoint_url)
    callback = S3ModelCheckpoint(dirpath, save_last=True, every_n_train_steps=1000)
    seen = CaptureAtTrainStart()
    fit = trainer(
        strategy=DDPStrategy(checkpoint_io=io, process_group_backend="gloo"),
        devices=int(os.environ["WORLD_SIZE"]),
        callbacks=[callback, seen],
        max_steps=int(max_steps),
        root=out_dir,
    )
    fit.fit(TinyModel(), data(batches=8), ckpt_path="last")
    assert seen.state is not None
    result = {"rank": rank, "resumed_step": seen.state["global_step"], "resumed_from": seen.ckpt_path}
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
