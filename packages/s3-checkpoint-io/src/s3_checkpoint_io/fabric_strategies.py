"""The Fabric strategies under their first import path; they live in :mod:`s3_checkpoint_io.strategies`."""

from __future__ import annotations

from s3_checkpoint_io.strategies import S3FabricFSDPStrategy, S3FabricModelParallelStrategy

__all__ = ["S3FabricFSDPStrategy", "S3FabricModelParallelStrategy"]
