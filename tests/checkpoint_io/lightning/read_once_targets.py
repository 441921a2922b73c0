"""Run on each rank by test_read_once_per_node.py (via support.ranks.launch)."""

from __future__ import annotations

import os
import pathlib

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, data, trainer
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from support.ranks import init_process_group


def resume_ddp(dirpath: str, endpoint_url: str, ckpt_path: str, out_dir: str, read_once: str) -> None:
    """Fit from ``ckpt_path`` under DDP (gloo); save what this rank restored to ``rank<r>.pt``.

    Writes its pid to ``pid<r>`` first, so a test can kill it mid-read. Then rank 0 alone loads the
    checkpoint once more (a plain load: the others wait at a barrier).
    """
    init_process_group()
    rank = int(os.environ["RANK"])
    pathlib.Path(out_dir, f"pid{rank}").write_text(str(os.getpid()))
    io = S3CheckpointIO(dirpath, endpoint_url=endpoint_url, read_once_per_node=read_once == "1")
    seen = CaptureAtTrainStart()
    fit = trainer(
        strategy=DDPStrategy(checkpoint_io=io, process_group_backend="gloo"),
        devices=int(os.environ["WORLD_SIZE"]),
        callbacks=[S3ModelCheckpoint(dirpath, save_last=True, every_n_train_steps=1000), seen],
        max_steps=5,
        root=out_dir,
    )
    fit.fit(TinyModel(), data(batches=8), ckpt_path=ckpt_path)
    torch.save(seen.state, pathlib.Path(out_dir, f"rank{rank}.pt"))
    # the resume's arming is gone: a load on one rank alone is that rank's own (no collective, no hang)
    assert "resume_start" not in vars(fit._checkpoint_connector)
    if rank == 0:
        io.load_checkpoint(ckpt_path)
    dist.barrier()
    dist.destroy_process_group()
