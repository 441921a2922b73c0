"""NeMo's ModelCheckpoint for an ``s3://`` dirpath: ranks agree by broadcast, nothing lists S3.

``NeMoModelCheckpoint`` (NeMo 3.0.0) treats its dirpath as a local path in places: unfinished-checkpoint
markers are created with ``pathlib`` (a local ``s3:/bucket/...`` folder appears in the working directory),
set-up globs that local folder, and top-k entries restored from a checkpoint are dropped because
``os.path.isfile`` cannot see S3. Lightning's set-up also lists the dirpath on rank 0 to warn when it is not
empty, and its existence checks go through s3fs, which falls back to a LIST on every miss.

For ``s3://`` dirpaths this subclass instead: skips the markers (an S3 object appears only once its upload
completes, so a half-written checkpoint never exists), checks existence with one HEAD on global rank 0 and
broadcasts the answer, and at set-up broadcasts rank 0's resume, last and best paths so every rank agrees
without listing. Local dirpaths behave exactly as in NeMo.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.fabric.utilities.cloud_io import get_filesystem
from nemo.utils.callbacks.nemo_model_checkpoint import NeMoModelCheckpoint

from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.rank_zero import share_from_rank_zero
from s3_checkpoint_io.removal import may_remove_checkpoint
from s3_dirpath_utils import is_s3_url, normalize_s3_url

logger = logging.getLogger(__name__)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class S3NeMoModelCheckpoint(NeMoModelCheckpoint):  # type: ignore[misc]
    """``NeMoModelCheckpoint`` that handles an ``s3://`` dirpath without listing it.

    Built by :func:`nemo_s3_integration.s3_exp_manager` in place of NeMo's class; takes the same
    arguments.
    """

    # Set by Lightning's ModelCheckpoint (untyped here: NeMo ships no type information).
    dirpath: Any
    last_model_path: Any
    best_model_path: Any
    _fs: Any

    @property
    def _on_s3(self) -> bool:
        return is_s3_url(self.dirpath)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Share rank 0's resume, last and best checkpoint paths with every rank (no listing on S3).

        Args:
            trainer: the Lightning Trainer.
            pl_module: the LightningModule.
            stage: the Trainer stage (``fit``, ...).

        Raises:
            ValueError: if ``save_last='link'`` is asked for an S3 dirpath (S3 has no links).
        """
        if not self._on_s3:
            super().setup(trainer, pl_module, stage)
            return
        if self.save_last == "link":
            raise ValueError(
                "ModelCheckpoint(save_last='link') needs a local dirpath; use save_last=True on S3"
            )
        self.dirpath = normalize_s3_url(str(self.dirpath))
        self._fs = get_filesystem(self.dirpath)
        shared = trainer.strategy.broadcast(
            (trainer.ckpt_path, self.last_model_path, self.best_model_path, self.dirpath)
        )
        ckpt_path, self.last_model_path, self.best_model_path, dirpath = shared
        if dirpath != self.dirpath:
            raise ValueError(
                f"ranks disagree on the checkpoint dirpath: rank 0 has {dirpath}, rank "
                f"{trainer.global_rank} has {self.dirpath}; give every rank the same config"
            )
        if ckpt_path != trainer.ckpt_path:
            trainer.ckpt_path = ckpt_path

    def file_exists(self, filepath: str, trainer: Any, check_dist_ckpt: bool = True) -> bool:
        """Whether a checkpoint exists: one HEAD on global rank 0 for S3, broadcast to all ranks.

        Args:
            filepath: the checkpoint path.
            trainer: the Lightning Trainer.
            check_dist_ckpt: also look for a distributed-checkpoint folder (local paths only).

        Returns:
            True if it exists.

        Raises:
            TypeError: if the strategy's CheckpointIO is not an S3CheckpointIO.
        """
        if not is_s3_url(filepath):
            return bool(super().file_exists(filepath, trainer, check_dist_ckpt))
        checkpoint_io = trainer.strategy.checkpoint_io
        if not isinstance(checkpoint_io, S3CheckpointIO):
            raise TypeError(
                f"an s3:// checkpoint dirpath needs S3CheckpointIO on the strategy, found "
                f"{type(checkpoint_io).__name__}; set the Trainer up with nemo_s3_integration.s3_exp_manager"
            )
        # S3CheckpointIO.exists also counts a save still uploading in the background.
        return share_from_rank_zero(
            lambda: checkpoint_io.exists(filepath), what=f"checking whether {filepath} exists"
        )

    def _should_remove_checkpoint(self, trainer: Any, previous: str, current: str) -> bool:
        if not self._on_s3:
            return bool(super()._should_remove_checkpoint(trainer, previous, current))
        # NeMo seeds last_model_path with the resume path, and Lightning deletes any non-local "previous"
        # path: the shared rule keeps the checkpoint training resumed from and anything outside dirpath.
        return may_remove_checkpoint(
            previous, current, dirpath=str(self.dirpath), resumed_from=trainer.ckpt_path
        )

    @property
    def _saved_checkpoint_paths(self) -> Iterable[Path]:
        if self._on_s3:
            # NeMo globs the dirpath as a local folder; the previous run's top-k comes back with the
            # checkpoint's own callback state instead.
            return []
        paths: Iterable[Path] = super()._saved_checkpoint_paths
        return paths

    def _remove_invalid_entries_from_topk(self) -> None:
        if self._on_s3:
            # os.path.isfile cannot see S3; an S3 checkpoint is either whole or absent, so keep the
            # restored entries and let a missing one surface when it is deleted.
            return
        super()._remove_invalid_entries_from_topk()

    @staticmethod
    def set_checkpoint_unfinished_marker(checkpoint_path: Path | str, barrier_after: bool = False) -> None:
        """Mark a local checkpoint unfinished; for S3 only keep NeMo's synchronisation.

        Args:
            checkpoint_path: the checkpoint path.
            barrier_after: wait for every rank after marking.
        """
        if is_s3_url(checkpoint_path):
            if barrier_after:
                _barrier()
            return
        NeMoModelCheckpoint.set_checkpoint_unfinished_marker(checkpoint_path, barrier_after=barrier_after)

    @staticmethod
    def remove_checkpoint_unfinished_marker(
        checkpoint_path: Path | str, barrier_before: bool = False
    ) -> None:
        """Clear a local checkpoint's unfinished marker; for S3 only keep NeMo's synchronisation.

        Args:
            checkpoint_path: the checkpoint path.
            barrier_before: wait for every rank before clearing.
        """
        if is_s3_url(checkpoint_path):
            if barrier_before:
                _barrier()
            return
        NeMoModelCheckpoint.remove_checkpoint_unfinished_marker(
            checkpoint_path, barrier_before=barrier_before
        )
