"""Stream PyTorch Lightning checkpoints to and from S3, with true asynchronous saves.

``S3CheckpointIO`` is the Lightning ``CheckpointIO`` plugin; ``S3ModelCheckpoint`` is a
``ModelCheckpoint`` that works with an ``s3://`` dirpath (including ``ckpt_path="last"``);
``SaveStatsLogger`` sends each save's stall, upload time and throughput to the trainer's loggers.
"""

from __future__ import annotations

from s3_checkpoint_io._config import CheckpointIOSettings
from s3_checkpoint_io._stats import SaveStats, SaveStatsLogger
from s3_checkpoint_io.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.errors import (
    BackgroundSaveError,
    CheckpointIOError,
    CorruptCheckpointError,
    WeightsOnlyLoadError,
)
from s3_checkpoint_io.model_checkpoint import S3ModelCheckpoint

__all__ = [
    "BackgroundSaveError",
    "CheckpointIOError",
    "CheckpointIOSettings",
    "CorruptCheckpointError",
    "S3CheckpointIO",
    "S3ModelCheckpoint",
    "SaveStats",
    "SaveStatsLogger",
    "WeightsOnlyLoadError",
]
__version__ = "0.1.0"
