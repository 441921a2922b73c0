"""The S3 clients a sharded strategy's checkpoints use, with the settings of its ``S3CheckpointIO``.

A strategy given an ``S3CheckpointIO`` plugin (the Trainer's, or Fabric's) uses that plugin's endpoint,
credentials, part size and concurrency; without one, the ``AWS_*`` environment and the defaults apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_utils import S3ClientConfig, S3Store, TransferConfig


@dataclass(frozen=True)
class S3Access:
    """Opens the DCP writers and readers and the ``S3Store`` of one strategy's checkpoints.

    Args:
        io: the strategy's ``S3CheckpointIO``, whose settings apply, or None for the environment's.
    """

    io: S3CheckpointIO | None

    def writer(self, url: str) -> S3StorageWriter:
        """A DCP storage writer for the checkpoint at ``url``."""
        if self.io is None:
            return S3StorageWriter(url)
        return S3StorageWriter(
            url,
            chunk_size_MB=self.io.settings.chunk_size_MB,
            max_concurrency=self.io.settings.max_write_concurrency,
            client_config=self.io.client_config,
        )

    def reader(self, url: str) -> S3StorageReader:
        """A DCP storage reader for the checkpoint at ``url``.

        The strategies' ``dcp.load`` runs on the default group, so the reader is told that group and
        broadcasts the metadata over it without looking for it in torch's call.
        """
        if self.io is None:
            return S3StorageReader(url, process_group=_default_group())
        return S3StorageReader(
            url,
            chunk_size_MB=self.io.settings.chunk_size_MB,
            max_concurrency=self.io.settings.max_read_concurrency,
            client_config=self.io.client_config,
            process_group=_default_group(),
        )

    def store(self) -> S3Store:
        """An ``S3Store`` for listing, commit checks and deletions (close it after use)."""
        if self.io is None:
            return S3Store(S3ClientConfig.from_env(), TransferConfig())
        return S3Store(self.io.client_config, TransferConfig(chunk_size_MB=self.io.settings.chunk_size_MB))


def _default_group() -> Any:
    """torch.distributed's default group when it is initialised, else None (a one-process load)."""
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
