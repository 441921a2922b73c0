"""``S3ModelCheckpoint``: Lightning's ``ModelCheckpoint`` for an ``s3://`` dirpath.

Stock ``ModelCheckpoint`` handles remote paths through fsspec in three places that go wrong on S3:
resuming with ``ckpt_path="last"`` finds nothing (``os.path.normpath`` turns ``s3://b/k`` into
``s3:/b/k``, Lightning #18261), and top-k / last clean-up deletes any remote "previous" checkpoint,
including the one the run resumed from or one in another run's directory (Lightning #21813). This
subclass keeps the URL intact, asks the trainer's ``S3CheckpointIO`` whether objects exist and what is
there, and deletes only inside its own dirpath, never the checkpoint the run resumed from.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from s3_checkpoint_io._compat import override
from s3_checkpoint_io._stats import _find_s3_checkpoint_io
from s3_checkpoint_io.checkpoint_io import PathLike, S3CheckpointIO
from s3_dirpath_utils import is_s3_url, normalize_s3_url, require_s3_url
from s3_utils.checkpoint_names import step_from_name

log = logging.getLogger(__name__)


class S3ModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that saves under an ``s3://`` dirpath through ``S3CheckpointIO``.

    Use it with an ``S3CheckpointIO`` plugin on the trainer::

        io = S3CheckpointIO("s3://bucket/run1", async_checkpointing=True)
        ckpt = S3ModelCheckpoint(dirpath="s3://bucket/run1", save_last=True, every_n_train_steps=100)
        trainer = Trainer(plugins=[io], callbacks=[ckpt])
        trainer.fit(model, ckpt_path="last")  # resumes from the newest last checkpoint, if any

    Args:
        dirpath: where checkpoints go, ``s3://bucket/prefix``.
        **kwargs: every other ``ModelCheckpoint`` argument (``save_last="link"`` is not supported).

    Raises:
        ValueError: if ``dirpath`` is not a valid S3 URL, or ``save_last="link"``.
    """

    def __init__(self, dirpath: PathLike, **kwargs: Any) -> None:
        url = require_s3_url(
            dirpath, "S3ModelCheckpoint dirpath", "use Lightning's ModelCheckpoint for local directories"
        )
        if kwargs.get("save_last") == "link":
            raise ValueError("S3ModelCheckpoint(save_last='link') is not supported: S3 has no links")
        super().__init__(dirpath=url.rstrip("/"), **kwargs)

    @property
    def dir_url(self) -> str:
        """The dirpath as a normalized URL without a trailing slash."""
        return normalize_s3_url(str(self.dirpath)).rstrip("/")

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's own setup lists the directory through fsspec; do the same through S3CheckpointIO.
        io = self._checkpoint_io(trainer)
        self.dirpath = trainer.strategy.broadcast(self.dir_url)
        checks = trainer.is_global_zero and stage == "fit" and self.save_top_k != 0
        if checks and next(iter(io.list_objects(self.dir_url + "/")), None) is not None:
            rank_zero_warn(f"Checkpoint directory {self.dir_url} exists and is not empty.")

    @override
    def file_exists(self, filepath: PathLike, trainer: pl.Trainer) -> bool:
        """Whether ``filepath`` exists in S3 (or is being uploaded), decided on rank 0 for all ranks."""
        exists = self._checkpoint_io(trainer).exists(filepath) if trainer.is_global_zero else False
        return bool(trainer.strategy.broadcast(exists))

    @override
    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        # Lightning picks the newest of these by modification time, through fsspec; hand it only the
        # one we choose (highest step in the name, then newest), with the URL intact.
        io = self._checkpoint_io(trainer)
        pattern = _last_name_pattern(self.CHECKPOINT_NAME_LAST, self.FILE_EXTENSION)
        best: tuple[int, float, str] | None = None
        for info in io.list_objects(self.dir_url + "/"):
            name = info.url[len(self.dir_url) + 1 :]
            if "/" in name or not pattern.match(name):
                continue
            step = step_from_name(name)
            modified = info.last_modified.timestamp() if info.last_modified is not None else 0.0
            key = (-1 if step is None else step, modified, info.url)
            if best is None or key > best:
                best = key
        if best is None:
            return set()
        # fsspec may hold a stale listing of this directory from earlier in the process.
        get_filesystem(best[2]).invalidate_cache()
        return {best[2]}

    @override
    def _should_remove_checkpoint(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        if previous == current:
            return False
        if not is_s3_url(previous):
            log.warning("not removing %s: it is not under %s", previous, self.dir_url)
            return False
        previous_url = normalize_s3_url(previous)
        if not previous_url.startswith(self.dir_url + "/"):
            log.warning(
                "not removing %s: it is outside this callback's dirpath %s", previous_url, self.dir_url
            )
            return False
        resumed = trainer.ckpt_path
        if resumed is not None and is_s3_url(resumed) and normalize_s3_url(resumed) == previous_url:
            log.info("not removing %s: training resumed from it", previous_url)
            return False
        return True

    def _checkpoint_io(self, trainer: pl.Trainer) -> S3CheckpointIO:
        io = _find_s3_checkpoint_io(trainer)
        if io is None:
            raise TypeError(
                f"S3ModelCheckpoint(dirpath={self.dir_url!r}) needs the trainer to save through "
                f"S3CheckpointIO, but it uses {type(trainer.strategy.checkpoint_io).__name__}; pass "
                "Trainer(plugins=[S3CheckpointIO(...)]) or DDPStrategy(checkpoint_io=S3CheckpointIO(...))"
            )
        return io


def _last_name_pattern(template: str, extension: str) -> re.Pattern[str]:
    """Names ``ModelCheckpoint`` gives last checkpoints: the template with any ``{...}`` filled in,
    optionally followed by a version (``-v1``), then the extension."""
    literal_parts = re.split(r"\{[^}]*\}", template)
    body = ".*".join(re.escape(part) for part in literal_parts)
    return re.compile(rf"^{body}(-v\d+)?{re.escape(extension)}$")
