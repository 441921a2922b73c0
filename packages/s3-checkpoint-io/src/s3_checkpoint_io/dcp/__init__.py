"""Sharded checkpoints on S3 through ``torch.distributed.checkpoint`` (DCP).

``S3StorageWriter`` and ``S3StorageReader`` plug into ``dcp.save`` / ``dcp.load``: every rank streams
its shards to S3, and one metadata PUT commits the save. Imported on its own (not from
``s3_checkpoint_io``) so that the Lightning plugin does not pull in torch.distributed.checkpoint.
"""

from __future__ import annotations

from s3_checkpoint_io.dcp.reader import S3StorageReader
from s3_checkpoint_io.dcp.stager import S3AsyncStager
from s3_checkpoint_io.dcp.writer import S3StorageWriter

__all__ = ["S3AsyncStager", "S3StorageReader", "S3StorageWriter"]
