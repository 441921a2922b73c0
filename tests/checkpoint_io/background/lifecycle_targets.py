"""Scripts the lifecycle tests run in a fresh interpreter (via support.ranks.spawn)."""

from __future__ import annotations

import gc
import json
import pathlib
from typing import Any

import psutil
import torch

from checkpoint_io.lit_helpers import TinyModel, data, trainer
from s3_checkpoint_io import S3CheckpointIO

MULTIPART_BYTES = 20 * 2**20
"""Four parts at the 5 MiB chunk size the scripts use."""


def multipart_state() -> dict[str, Any]:
    """20 MiB of known values: a checkpoint that needs several parts to upload."""
    return {"w": torch.arange(MULTIPART_BYTES // 4, dtype=torch.int32), "step": 7}


def async_save_as_last_statement(url: str) -> None:
    """Queue an asynchronous multipart save and end the script right away, without waiting."""
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, async_checkpointing=True)
    io.save_checkpoint(multipart_state(), url)


class PaddedModel(TinyModel):
    """TinyModel whose checkpoints carry 20 MiB more, so their upload takes several parts."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["padding"] = multipart_state()["w"]


def trainer_save_after_fit(url: str, root: str) -> None:
    """``fit`` (whose teardown closes the saver), then ``trainer.save_checkpoint`` as the last call."""
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, async_checkpointing=True)
    fitted = trainer(plugins=[io], max_steps=2, root=root, enable_checkpointing=False)
    fitted.fit(PaddedModel(), data())
    fitted.save_checkpoint(url)


def resident_after_keeping_one_small_tensor(url: str, out_file: str) -> None:
    """Load ``url``, read every tensor, keep only the small one, and report what stays resident."""
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, max_read_concurrency=4)
    io.load_checkpoint(url + ".warmup")  # clients and threads exist now
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    loaded = io.load_checkpoint(url)
    total = int(loaded["big"].sum())  # every page of the big tensor has been read
    loaded_rise = process.memory_info().rss - before
    kept = loaded["small"]
    del loaded
    gc.collect()
    kept_rise = process.memory_info().rss - before
    mapped = [line for line in pathlib.Path("/proc/self/maps").read_text().splitlines() if "memfd:" in line]
    pathlib.Path(out_file).write_text(
        json.dumps(
            {
                "sum": total,
                "small": kept.tolist(),
                "loaded_rise_mib": loaded_rise / 2**20,
                "kept_rise_mib": kept_rise / 2**20,
                "memfd_mappings": len(mapped),
            }
        )
    )
