"""The Lightning integration: the ``CheckpointIO`` plugin, ``ModelCheckpoint`` and save statistics.

Sharded strategies are in :mod:`s3_checkpoint_io.strategies` (they import torch DCP; these do not).
"""

from __future__ import annotations

from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.lightning.model_checkpoint import S3ModelCheckpoint
from s3_checkpoint_io.lightning.save_stats import SaveStats
from s3_checkpoint_io.lightning.settings import CheckpointIOSettings
from s3_checkpoint_io.lightning.stats_logger import SaveStatsLogger

__all__ = ["CheckpointIOSettings", "S3CheckpointIO", "S3ModelCheckpoint", "SaveStats", "SaveStatsLogger"]
