"""Lightning's sharded strategies (Trainer and Fabric) that save to and load from ``s3://`` through DCP.

Each class is Lightning's own strategy with its checkpoint methods routed through one recipe
(:mod:`~s3_checkpoint_io.strategies.sharded_checkpoints`): a sharded save is a DCP checkpoint under
the ``s3://`` prefix, committed by one object, in the background when the ``S3CheckpointIO`` saves
asynchronously (:mod:`~s3_checkpoint_io.strategies.async_saves`); a load reads it back on every rank.
How the model and optimizer states are built and restored depends only on how the model is sharded
(:mod:`~s3_checkpoint_io.strategies.state_dicts`: DTensor/FSDP2 or FSDP1);
:mod:`~s3_checkpoint_io.strategies.trainer` and :mod:`~s3_checkpoint_io.strategies.fabric` are the
wiring to each API, and :mod:`~s3_checkpoint_io.strategies.s3_access` opens the S3 clients.
"""

from __future__ import annotations

from s3_checkpoint_io.strategies.fabric import S3FabricFSDPStrategy, S3FabricModelParallelStrategy
from s3_checkpoint_io.strategies.trainer import LIGHTNING_STATE_KEY, S3FSDPStrategy, S3ModelParallelStrategy

__all__ = [
    "LIGHTNING_STATE_KEY",
    "S3FSDPStrategy",
    "S3FabricFSDPStrategy",
    "S3FabricModelParallelStrategy",
    "S3ModelParallelStrategy",
]
