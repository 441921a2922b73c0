"""``SaveStatsLogger``: a callback that hands each save's :class:`SaveStats` to the trainer's loggers."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.lightning.save_stats import SaveStats

__all__ = ["SaveStats", "SaveStatsLogger", "find_s3_checkpoint_io"]


class SaveStatsLogger(Callback):
    """Logs each completed save's :class:`SaveStats` to every logger of the trainer (rank 0 only).

    Add it next to an ``S3CheckpointIO``: ``Trainer(plugins=[io], callbacks=[SaveStatsLogger()])``.
    Stats of asynchronous saves are logged at the first batch end after the upload finished, and any
    left are logged when training ends.

    Args:
        prefix: prepended to each metric name.
    """

    def __init__(self, prefix: str = "checkpoint/") -> None:
        self.prefix = prefix
        self._logged_up_to = 0

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._flush(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        io = find_s3_checkpoint_io(trainer)
        if io is not None:
            io.wait_for_saves()
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        io = find_s3_checkpoint_io(trainer)
        if io is None or not trainer.is_global_zero:
            return
        for stats in io.save_history:
            if stats.sequence <= self._logged_up_to:
                continue
            for logger in trainer.loggers:
                logger.log_metrics(stats.as_metrics(self.prefix), step=trainer.global_step)
            self._logged_up_to = stats.sequence


def find_s3_checkpoint_io(trainer: pl.Trainer) -> S3CheckpointIO | None:
    """The trainer's ``S3CheckpointIO``, also behind wrappers such as Lightning's ``AsyncCheckpointIO``."""
    io: object = trainer.strategy.checkpoint_io
    for _ in range(8):  # unwrap wrappers such as Lightning's AsyncCheckpointIO
        if isinstance(io, S3CheckpointIO):
            return io
        io = getattr(io, "checkpoint_io", None)
        if io is None:
            return None
    return None
