"""A checkpoint connector whose ``resume_start`` loads the path global rank 0 chose, on every rank.

Every rank calls ``resume_start`` at once, so the load inside it is a collective: with the trainer's
``S3CheckpointIO`` and a strategy whose load is Lightning's own (DDP), the checkpoint is downloaded once
per node and its bytes shared with the node's other ranks (``S3CheckpointIO.every_rank_loads``;
``read_once_per_node=False`` on the plugin turns it off).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

from s3_checkpoint_io.lightning.lightning_internals import strategy_loads_on_every_rank
from s3_checkpoint_io.lightning.stats_logger import find_s3_checkpoint_io

logger = logging.getLogger(__name__)


class S3ResumeConnector(_CheckpointConnector):
    """Lightning's checkpoint connector, with the resume path taken from global rank 0.

    Resume discovery runs on rank 0 only, before the process group exists, so only rank 0's Trainer holds
    the path at first. ``resume_start`` runs on every rank once the process group is up: the path is
    broadcast from rank 0 there, every rank loads it (downloaded once per node: see the module), and
    each logs how long its load took.
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
        io = find_s3_checkpoint_io(self.trainer)
        every_rank: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if io is not None and strategy_loads_on_every_rank(strategy):
            every_rank = io.every_rank_loads()
        with every_rank:
            super().resume_start(shared, *args, **kwargs)
        logger.info(
            "rank %d loaded checkpoint %s in %.2f s",
            self.trainer.global_rank,
            shared,
            time.perf_counter() - started,
        )
