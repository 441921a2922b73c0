"""A checkpoint connector whose ``resume_start`` loads the path global rank 0 chose, on every rank."""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

logger = logging.getLogger(__name__)


class S3ResumeConnector(_CheckpointConnector):
    """Lightning's checkpoint connector, with the resume path taken from global rank 0.

    Resume discovery runs on rank 0 only, before the process group exists, so only rank 0's Trainer holds
    the path at first. ``resume_start`` runs on every rank once the process group is up: the path is
    broadcast from rank 0 there, every rank loads it, and each logs how long its load took.
    """

    def resume_start(self, checkpoint_path: Any = None, *args: Any, **kwargs: Any) -> None:
        """Broadcast rank 0's checkpoint path, then load it on this rank.

        Args:
            checkpoint_path: the path Lightning selected on this rank (None on ranks other than 0 when
                rank 0 alone discovered it).
            *args: passed on to Lightning (``weights_only`` from Lightning 2.5 on).
            **kwargs: passed on to Lightning.
        """
        strategy = self.trainer.strategy
        shared = strategy.broadcast(str(checkpoint_path) if checkpoint_path else None)
        if shared != (str(checkpoint_path) if checkpoint_path else None) and checkpoint_path:
            logger.warning(
                "rank %d was asked to resume from %s but rank 0 chose %s; loading rank 0's",
                self.trainer.global_rank,
                checkpoint_path,
                shared,
            )
        if not shared:
            super().resume_start(None, *args, **kwargs)
            return
        started = time.perf_counter()
        super().resume_start(shared, *args, **kwargs)
        logger.info(
            "rank %d loaded checkpoint %s in %.2f s",
            self.trainer.global_rank,
            shared,
            time.perf_counter() - started,
        )
