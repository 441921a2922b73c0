"""Stream PyTorch Lightning checkpoints to and from S3, with true asynchronous saves.

``S3CheckpointIO`` is the Lightning ``CheckpointIO`` plugin; ``S3ModelCheckpoint`` is a
``ModelCheckpoint`` that works with an ``s3://`` dirpath (including ``ckpt_path="last"``);
``SaveStatsLogger`` sends each save's stall, upload time and throughput to the trainer's loggers.

The sub-packages, each named for its job: ``engine`` (write and load one checkpoint file),
``background`` (asynchronous saves: snapshot, host buffers, upload helper process), ``dcp`` (sharded
checkpoints through torch DCP), ``lightning`` (the plugin and callbacks), ``strategies`` (Lightning's
sharded strategies on S3), ``convert`` (to safetensors or one ``torch.save`` file).

The names below are imported when first used, so that importing a sub-package (the upload helper
process imports ``engine`` and ``background``) does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from s3_checkpoint_io.errors import (
    BackgroundSaveError,
    CheckpointIOError,
    CorruptCheckpointError,
    WeightsOnlyLoadError,
)

if TYPE_CHECKING:
    from s3_checkpoint_io.lightning import (
        CheckpointIOSettings,
        S3CheckpointIO,
        S3ModelCheckpoint,
        SaveStats,
        SaveStatsLogger,
    )

_FROM_LIGHTNING = (
    "CheckpointIOSettings",
    "S3CheckpointIO",
    "S3ModelCheckpoint",
    "SaveStats",
    "SaveStatsLogger",
)

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


def __getattr__(name: str) -> Any:
    if name in _FROM_LIGHTNING:
        return getattr(importlib.import_module("s3_checkpoint_io.lightning"), name)
    raise AttributeError(f"module 's3_checkpoint_io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
