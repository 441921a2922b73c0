"""Scripts the lifecycle tests run in a fresh interpreter (via support.ranks.spawn)."""

from __future__ import annotations

from typing import Any

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
