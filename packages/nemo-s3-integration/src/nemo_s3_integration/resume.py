"""Resume discovery on S3: one listing on global rank 0, the choice shared with every rank.

NeMo 3.0.0's ``check_resume`` lists the checkpoint prefix on every rank (its rank-0 guard is always
true for ``s3://`` paths), so a thousand-rank job sends a thousand listings at once and S3 throttles them.
Here global rank 0 lists once and picks by :mod:`s3_utils.checkpoint_names`' rule (``*end.ckpt`` before
``*last.ckpt``, then the highest step, epoch, LastModified); the other ranks receive the path, or rank 0's
error, by broadcast at once when a process group already exists, or the path when Lightning has created
the group (see :mod:`nemo_s3_integration.connector`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.rank_zero import share_from_rank_zero
from s3_dirpath_utils import is_s3_url, join_s3_url, require_s3_url
from s3_utils import ObjectInfo, S3ClientConfig, S3Store, TransferConfig
from s3_utils.checkpoint_names import choose_resume_checkpoint

logger = logging.getLogger(__name__)

CheckResume = Callable[..., Any]
"""The signature of ``nemo.utils.exp_manager.check_resume``."""


def find_resume_checkpoint(
    dirpath: str,
    *,
    resume_past_end: bool = False,
    resume_ignore_no_checkpoint: bool = False,
    source: S3CheckpointIO | S3Store | None = None,
) -> str | None:
    """List ``dirpath`` once and pick the checkpoint to resume from.

    The rule is :func:`s3_utils.checkpoint_names.choose_resume_checkpoint`: ``*end.ckpt`` (a finished
    run) wins over ``*last.ckpt``; checkpoints with an ``-unfinished`` marker are skipped; among several of
    a kind the highest ``step=<n>`` in the name wins, then the highest ``epoch=<n>``, then the newest
    LastModified.

    Args:
        dirpath: the ``s3://bucket/prefix`` that ModelCheckpoint saves into.
        resume_past_end: allow resuming from an ``*end.ckpt`` (to train past a finished run).
        resume_ignore_no_checkpoint: return None instead of raising when nothing qualifies.
        source: what to list with: the Trainer's S3CheckpointIO, an S3Store, or (None) a short-lived
            S3Store set up from the environment.

    Returns:
        The ``s3://`` URL of the checkpoint to resume from, or None (nothing found and allowed).

    Raises:
        FileNotFoundError: if nothing qualifies and ``resume_ignore_no_checkpoint`` is False.
        ValueError: if the newest checkpoint is an ``*end.ckpt`` and ``resume_past_end`` is False, or
            ``dirpath`` is not an S3 URL.
    """
    prefix = join_s3_url(require_s3_url(dirpath, "resume discovery dirpath"), "/")
    started = time.perf_counter()
    listed: list[ObjectInfo]
    if isinstance(source, S3CheckpointIO):
        listed = list(source.list_objects(prefix))
    elif source is not None:
        listed = list(source.iter_objects(prefix))
    else:
        with S3Store(S3ClientConfig.from_env(), TransferConfig()) as store:
            listed = list(store.iter_objects(prefix))
    choice = choose_resume_checkpoint(listed)
    chosen = None if choice is None else choice.checkpoint.url
    logger.info(
        "resume discovery listed %d objects under %s in %.2f s; chose %s (%s)",
        len(listed),
        prefix,
        time.perf_counter() - started,
        chosen,
        "nothing qualifies" if choice is None else choice.reason,
    )
    if chosen is None:
        if resume_ignore_no_checkpoint:
            logger.warning("no *end.ckpt or *last.ckpt under %s; training from the start", prefix)
            return None
        raise FileNotFoundError(
            f"no finished *end.ckpt or *last.ckpt checkpoint under {prefix}; set "
            "exp_manager.resume_ignore_no_checkpoint=True to start from scratch when there is none"
        )
    if chosen.endswith("end.ckpt") and not resume_past_end:
        raise ValueError(
            f"found {chosen}: the run in {prefix} already finished; set exp_manager.resume_past_end=True "
            "to continue training from it, or use a new dirpath for a new run"
        )
    return chosen


def rank_zero_check_resume(original: CheckResume) -> CheckResume:
    """Wrap NeMo's ``check_resume`` so that, for an ``s3://`` dirpath, only global rank 0 lists S3.

    The wrapper keeps NeMo's signature. For a local dirpath, or without ``resume_if_exists``, it calls
    NeMo's function unchanged. For ``s3://`` it runs :func:`find_resume_checkpoint` on rank 0, shares the
    result or any error (every rank raises it at once) when a process group exists, then calls NeMo's
    function with ``resume_if_exists=False`` and the chosen path as ``resume_from_checkpoint``: NeMo then sets
    ``trainer.ckpt_path`` and tidies the log directory as usual, without listing.

    Args:
        original: ``nemo.utils.exp_manager.check_resume``.

    Returns:
        A function with the same signature.
    """

    def check_resume(  # noqa: PLR0917 (NeMo calls it positionally)
        trainer: Any,
        log_dir: Any,
        resume_if_exists: bool = False,
        resume_past_end: bool = False,
        resume_ignore_no_checkpoint: bool = False,
        dirpath: str | None = None,
        resume_from_checkpoint: str | None = None,
    ) -> Any:
        if not (resume_if_exists and is_s3_url(dirpath)):
            return original(
                trainer,
                log_dir,
                resume_if_exists,
                resume_past_end,
                resume_ignore_no_checkpoint,
                dirpath,
                resume_from_checkpoint,
            )
        assert dirpath is not None  # is_s3_url(None) is False
        checkpoint_io = trainer.strategy.checkpoint_io
        found = share_from_rank_zero(
            lambda: find_resume_checkpoint(
                str(dirpath),
                resume_past_end=resume_past_end,
                resume_ignore_no_checkpoint=resume_ignore_no_checkpoint,
                source=checkpoint_io if isinstance(checkpoint_io, S3CheckpointIO) else None,
            ),
            what=f"looking for a checkpoint to resume from under {dirpath}",
            # Before the process group exists only rank 0 knows; S3ResumeConnector shares its path later.
            without_group=lambda: None,
        )
        # As in NeMo, a checkpoint found in dirpath wins over an explicit resume_from_checkpoint.
        checkpoint = found or resume_from_checkpoint
        return original(
            trainer, log_dir, False, resume_past_end, resume_ignore_no_checkpoint, dirpath, checkpoint
        )

    check_resume.__doc__ = original.__doc__
    return check_resume
