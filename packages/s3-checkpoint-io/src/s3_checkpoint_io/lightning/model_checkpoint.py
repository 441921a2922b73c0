"""``S3ModelCheckpoint``: Lightning's ``ModelCheckpoint`` for an ``s3://`` dirpath.

Stock ``ModelCheckpoint`` handles remote paths through fsspec in three places that go wrong on S3:
resuming with ``ckpt_path="last"`` finds nothing (``os.path.normpath`` turns ``s3://b/k`` into
``s3:/b/k``, Lightning #18261), and top-k / last clean-up deletes any remote "previous" checkpoint,
including the one the run resumed from or one in another run's directory (Lightning #21813). This
subclass keeps the URL intact, asks the trainer's ``S3CheckpointIO`` (so the endpoint and credentials
given in code, never fsspec's environment-only view) whether objects exist and what is there, does each
of those lookups once on global rank 0 and shares the outcome with every rank, picks the last
checkpoint by :mod:`s3_utils.checkpoint_names`' rule, and deletes only inside its own dirpath, never the
checkpoint the run resumed from (:mod:`s3_checkpoint_io.removal`).

One upload per step: with ``save_top_k`` and ``save_last`` both on, Lightning saves the same state
twice in one step (the top-k checkpoint, then ``last``). Here the second is a server-side copy of the
first (:meth:`S3CheckpointIO.copy_checkpoint`), made once the first is durable. The two differ only in
this callback's ``last_model_path`` (Lightning sets it just before the ``last`` save); a run resumed from
such a copy sets it to the checkpoint it resumed from, which is what an uploaded ``last`` holds.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from s3_checkpoint_io.lightning.checkpoint_io import PathLike, S3CheckpointIO
from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.lightning.last_checkpoint import ListedCheckpoint
from s3_checkpoint_io.lightning.lightning_internals import (
    ModelCheckpointHooks,
    answer_probes_for,
    load_on_every_rank_during_resume,
    stop_answering_probes,
)
from s3_checkpoint_io.lightning.stats_logger import find_s3_checkpoint_io
from s3_checkpoint_io.rank_zero import share_from_rank_zero
from s3_checkpoint_io.removal import may_remove_checkpoint
from s3_dirpath_utils import normalize_s3_url, require_s3_url
from s3_utils import ObjectInfo
from s3_utils.checkpoint_names import (
    as_checkpoints,
    is_unfinished_marker,
    newest_checkpoint,
    unfinished_names,
)
from s3_utils.sharded import commit_url

log = logging.getLogger(__name__)


class SavesShardedToS3:
    """Marks a strategy whose ``s3://`` checkpoint is a prefix of shards and a commit, not one object.

    ``S3ModelCheckpoint`` uploads such a strategy's "last" checkpoint again instead of copying the
    top-k object it saved in the same step. The sharded strategies of
    :mod:`s3_checkpoint_io.strategies` derive from it.
    """


class S3ModelCheckpoint(ModelCheckpointHooks):
    """``ModelCheckpoint`` that saves under an ``s3://`` dirpath through ``S3CheckpointIO``.

    Use it with an ``S3CheckpointIO`` plugin on the trainer::

        io = S3CheckpointIO("s3://bucket/run1", async_checkpointing=True)
        ckpt = S3ModelCheckpoint(dirpath="s3://bucket/run1", save_last=True, every_n_train_steps=100)
        trainer = Trainer(plugins=[io], callbacks=[ckpt])
        trainer.fit(model, ckpt_path="last")  # resumes from the newest last checkpoint, if any

    ``ckpt_path="last"`` picks the newest ``last`` checkpoint in the dirpath by the highest step in the
    name, then epoch, then LastModified (:func:`s3_utils.checkpoint_names.newest_checkpoint`), skipping one
    with an ``-unfinished`` marker. Listings and existence checks run on global rank 0 and their outcome
    (or error) is broadcast once a process group exists; before Lightning creates it, each rank lists.

    A ``last`` checkpoint saved in the same step as a top-k one is a server-side copy of it, not a second
    upload (queued behind the top-k save when saving asynchronously; moved through the client where the
    store refuses copies). ``save_last="link"`` is refused: Lightning's link points ``last`` at the newest
    checkpoint even from an earlier step, which top-k rotation may then delete; ``save_last=True``
    already stores each step's bytes once.

    Its ``setup``, which runs on every rank before Lightning's resume, arms that resume's load as a
    collective, so a DDP resume downloads the checkpoint once per node, not once per rank
    (``S3CheckpointIO(read_once_per_node=False)`` turns it off).

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
            raise ValueError(
                "S3ModelCheckpoint(save_last='link') is not supported: S3 has no links; use save_last=True, "
                "which stores a last checkpoint saved in the same step as a top-k one as a server-side copy "
                "of it (one upload per step)"
            )
        super().__init__(dirpath=url.rstrip("/"), **kwargs)
        self._topk_candidates: dict[str, Tensor] | None = None
        self._copy_last_from: str | None = None

    @property
    def dir_url(self) -> str:
        """The dirpath as a normalized URL without a trailing slash."""
        return normalize_s3_url(str(self.dirpath)).rstrip("/")

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning's own setup lists the directory through fsspec; do the same through S3CheckpointIO.
        stop_answering_probes()  # "last" is resolved by now, whether or not the connector probed our pick
        io = self._checkpoint_io(trainer)
        # Every rank runs this hook, then Lightning's resume loads the checkpoint on every rank at once:
        # the load may download once per node (S3CheckpointIO.every_rank_loads).
        load_on_every_rank_during_resume(trainer, io.every_rank_loads)
        self.dirpath = trainer.strategy.broadcast(self.dir_url)
        if stage != "fit" or self.save_top_k == 0:
            return
        prefix = self.dir_url + "/"
        not_empty = share_from_rank_zero(
            lambda: next(iter(io.list_objects(prefix)), None) is not None, what=f"listing {prefix}"
        )
        if not_empty:
            rank_zero_warn(f"Checkpoint directory {self.dir_url} exists and is not empty.")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        resumed = None if trainer.ckpt_path is None else normalize_s3_url(str(trainer.ckpt_path))
        if resumed is not None and self._is_last_name(resumed):
            # A copied last checkpoint holds the top-k checkpoint's state, whose last_model_path is the
            # previous last; an uploaded one names itself. Resuming from either continues the same way.
            self.last_model_path = resumed

    @override
    def save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        """Lightning's top-k save, remembering this call's metrics to tell its last save apart."""
        # Lightning computes monitor_candidates once per hook call and hands the same dict to the top-k
        # and the last save: seeing it again tells that both saves belong to one call, so one state.
        self._topk_candidates = monitor_candidates
        super().save_topk_checkpoint(trainer, monitor_candidates)

    @override
    def save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        """Lightning's last save, as a copy of the top-k checkpoint saved in the same call if any."""
        same_call = monitor_candidates is self._topk_candidates
        last_path, last_step = self.last_saved
        saved_now = bool(last_path) and last_step == trainer.global_step
        # A sharded strategy's checkpoint is a prefix of shards and a commit: no single object to copy.
        one_object = not isinstance(trainer.strategy, SavesShardedToS3)
        self._copy_last_from = last_path if same_call and saved_now and one_object else None
        self._topk_candidates = None
        try:
            super().save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._copy_last_from = None

    @override
    def save_checkpoint_at(self, trainer: pl.Trainer, filepath: str) -> None:
        """Lightning's save, or a server-side copy of the top-k checkpoint when it is this step's last."""
        source = self._copy_last_from
        if source is None or source == filepath:
            super().save_checkpoint_at(trainer, filepath)
            return
        if trainer.is_global_zero:
            self._checkpoint_io(trainer).copy_checkpoint(source, filepath)
        trainer.strategy.barrier("S3ModelCheckpoint.copy_checkpoint")
        self.record_save(trainer, filepath)

    @override
    def file_exists(self, filepath: PathLike, trainer: pl.Trainer) -> bool:
        """Whether ``filepath`` exists in S3 (or is being uploaded), decided on rank 0 for all ranks."""
        io = self._checkpoint_io(trainer)
        return share_from_rank_zero(
            lambda: io.exists(filepath) or self._is_committed_sharded(io, filepath),
            what=f"checking whether {filepath} exists",
        )

    @staticmethod
    def _is_committed_sharded(io: S3CheckpointIO, filepath: PathLike) -> bool:
        """Whether ``filepath`` is a committed sharded checkpoint (a prefix holding its commit object)."""
        return io.exists(commit_url(str(filepath)))

    @override
    def find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        """The newest last checkpoint in the dirpath, listed once on rank 0 (none: an empty set)."""
        # Lightning picks the newest of these by modification time, probing each through fsspec; hand it
        # only the one we choose, as a ListedCheckpoint whose probes are answered from the listing.
        io = self._checkpoint_io(trainer)
        prefix = self.dir_url + "/"
        found = share_from_rank_zero(
            lambda: self._newest_last(io.list_objects(prefix)),
            what=f"listing {prefix} for the last checkpoint",
        )
        if found is None:
            return set()
        answer_probes_for(found)
        return {found}

    def _is_last_name(self, url: str) -> bool:
        """Whether ``url`` lies directly in the dirpath and has a last checkpoint's name."""
        name = url[len(self.dir_url) + 1 :] if url.startswith(self.dir_url + "/") else ""
        pattern = _last_name_pattern(self.CHECKPOINT_NAME_LAST, self.FILE_EXTENSION)
        return "/" not in name and pattern.match(name) is not None

    def _newest_last(self, listed: Iterable[ObjectInfo]) -> ListedCheckpoint | None:
        # A committed sharded checkpoint is one candidate (its prefix); an uncommitted one is none.
        direct = [info for info in as_checkpoints(listed) if "/" not in info.url[len(self.dir_url) + 1 :]]
        unfinished = unfinished_names(info.url for info in direct)
        last = [
            info
            for info in direct
            if self._is_last_name(info.url)
            and info.url not in unfinished
            and not is_unfinished_marker(info.url)
        ]
        choice = newest_checkpoint(last)
        if choice is None:
            return None
        info = choice.checkpoint
        log.info("last checkpoint under %s: %s (%s)", self.dir_url, info.url, choice.reason)
        modified = info.last_modified or datetime.fromtimestamp(0, UTC)
        return ListedCheckpoint(info.url, modified)

    @override
    def may_remove_previous(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        """Only inside the dirpath, and never the checkpoint the run resumed from."""
        return may_remove_checkpoint(previous, current, dirpath=self.dir_url, resumed_from=trainer.ckpt_path)

    def _checkpoint_io(self, trainer: pl.Trainer) -> S3CheckpointIO:
        io = find_s3_checkpoint_io(trainer)
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
