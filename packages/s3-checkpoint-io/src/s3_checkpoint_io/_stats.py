"""Per-save measurements, and a Lightning callback that hands them to the trainer's loggers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from s3_checkpoint_io._compat import override
from s3_utils import TransferStats

if TYPE_CHECKING:
    from s3_checkpoint_io.checkpoint_io import S3CheckpointIO

MiB = 1024 * 1024


@dataclass(frozen=True)
class SaveStats:
    """What one completed save cost.

    Attributes:
        sequence: 1 for the first save of this ``S3CheckpointIO``, then 2, 3, ...
        path: the checkpoint URL.
        bytes: bytes written to S3.
        stall_s: seconds ``save_checkpoint`` blocked its caller (the whole save when synchronous;
            waiting for a free slot plus taking the snapshot when asynchronous).
        upload_s: seconds from opening the upload to completing it, serialization included (in the
            background when asynchronous), as the upload's writer counted them.
        asynchronous: whether the upload ran in the background.
        requests: HTTP requests the upload sent, retries included.
        retries: requests sent again after a transient failure.
    """

    sequence: int
    path: str
    bytes: int
    stall_s: float
    upload_s: float
    asynchronous: bool
    requests: int = 0
    retries: int = 0

    @classmethod
    def of_upload(
        cls, sequence: int, path: str, upload: TransferStats, stall_s: float, asynchronous: bool
    ) -> SaveStats:
        """The stats of the save of ``path``, whose upload the writer counted in ``upload``."""
        return cls(
            sequence,
            path,
            upload.bytes,
            stall_s,
            upload.seconds,
            asynchronous,
            upload.requests,
            upload.retries,
        )

    @property
    def mib_per_s(self) -> float:
        """Upload throughput in MiB/s (0 for an instantaneous upload)."""
        return self.bytes / MiB / self.upload_s if self.upload_s > 0 else 0.0

    def as_metrics(self, prefix: str = "checkpoint/") -> dict[str, float]:
        """The numbers as a flat dict for a Lightning logger, keys starting with ``prefix``."""
        return {
            f"{prefix}save_bytes": float(self.bytes),
            f"{prefix}save_stall_s": self.stall_s,
            f"{prefix}save_upload_s": self.upload_s,
            f"{prefix}save_MiB_per_s": self.mib_per_s,
            f"{prefix}save_requests": float(self.requests),
            f"{prefix}save_retries": float(self.retries),
        }


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
        io = _find_s3_checkpoint_io(trainer)
        if io is not None:
            io.wait_for_saves()
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        io = _find_s3_checkpoint_io(trainer)
        if io is None or not trainer.is_global_zero:
            return
        for stats in io.save_history:
            if stats.sequence <= self._logged_up_to:
                continue
            for logger in trainer.loggers:
                logger.log_metrics(stats.as_metrics(self.prefix), step=trainer.global_step)
            self._logged_up_to = stats.sequence


def _find_s3_checkpoint_io(trainer: pl.Trainer) -> S3CheckpointIO | None:
    from s3_checkpoint_io.checkpoint_io import S3CheckpointIO

    io: object = trainer.strategy.checkpoint_io
    for _ in range(8):  # unwrap wrappers such as Lightning's AsyncCheckpointIO
        if isinstance(io, S3CheckpointIO):
            return io
        io = getattr(io, "checkpoint_io", None)
        if io is None:
            return None
    return None
