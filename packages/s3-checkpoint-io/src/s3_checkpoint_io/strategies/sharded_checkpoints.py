"""The one recipe every sharded strategy follows for an ``s3://`` checkpoint (Trainer and Fabric).

A save: rank 0's path is broadcast (a local path goes to Lightning), the arguments and the strategy's
mode are checked (:meth:`ShardedCheckpoints._check_s3_save`), then the model and optimizer states and,
from rank 0, the rest of the checkpoint are one DCP save committed by one object
(:meth:`ShardedCheckpoints._commit`): synchronous, or through :class:`ShardedAsyncSaves` when the
strategy's ``S3CheckpointIO`` saves asynchronously. A load: the path is broadcast, a checkpoint still
being saved is waited for and must be committed, and the strategy's :class:`StateDictKind` builds the
states, runs ``dcp.load`` and restores them in place (:meth:`ShardedCheckpoints._load_shards`).
A removal runs on rank 0 after every save submitted before it has committed.

:mod:`~s3_checkpoint_io.strategies.trainer` and :mod:`~s3_checkpoint_io.strategies.fabric` only say
which objects those are under each API.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any, ClassVar, cast

import torch
from lightning.fabric.utilities.types import _PATH
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.lightning.model_checkpoint import SavesShardedToS3
from s3_checkpoint_io.strategies.async_saves import ShardedAsyncSaves
from s3_checkpoint_io.strategies.s3_access import S3Access
from s3_checkpoint_io.strategies.state_dicts import LIGHTNING_STATE_KEY, Restore, StateDictKind
from s3_dirpath_utils import is_s3_url, normalize_s3_url
from s3_utils import S3NotFoundError
from s3_utils.sharded import delete_sharded_checkpoint, is_committed

__all__ = ["LIGHTNING_STATE_KEY", "ShardedCheckpoints"]


class ShardedCheckpoints(SavesShardedToS3):
    """The ``s3://`` half of a sharded strategy's checkpoint methods (mixed in before the strategy)."""

    _s3_state_dicts: ClassVar[StateDictKind]  # how this strategy's models are sharded

    # Provided by the Lightning strategy this is mixed into.
    global_rank: int
    is_global_zero: bool
    checkpoint_io: Any
    broadcast: Callable[..., Any]

    _s3_async: ShardedAsyncSaves | None = None  # created at the first asynchronous save

    # -- the save recipe -------------------------------------------------------------------------

    def _s3_url(self, path: _PATH) -> str | None:
        """Rank 0's path as a normalized ``s3://`` URL, or None for a local path (all ranks)."""
        shared = self.broadcast(str(path))
        return normalize_s3_url(shared).rstrip("/") if is_s3_url(shared) else None

    def _check_s3_save(self, storage_options: Any, filter: Any = None) -> None:
        """Refuse what a sharded save to ``s3://`` does not take, before anything is written."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if filter is not None:
            raise NotImplementedError(f"{type(self).__name__} does not save filtered sharded checkpoints")
        refusal = self._s3_state_dicts.refusal(self)
        if refusal is not None:
            raise ValueError(refusal)

    def _commit(self, url: str, shards: dict[str, Any], rest: dict[str, Any] | None) -> None:
        """One DCP save of ``shards`` plus ``rest`` (given on rank 0 only: the other ranks' copies are
        the same, Lightning keeps rank 0's), committed by one object; in the background when the
        ``S3CheckpointIO`` saves asynchronously.

        Raises:
            BackgroundSaveError: if an earlier asynchronous save failed (then this one is not started).
        """
        if rest is not None:
            buffer = io.BytesIO()
            torch.save(rest, buffer)
            shards[LIGHTNING_STATE_KEY] = buffer.getvalue()
        saves = self._s3_async_saves()
        if saves is None:
            dcp_save(shards, storage_writer=self._s3_access().writer(url))
        else:
            saves.save(shards, url, self._s3_access().writer(url))

    # -- the load recipe -------------------------------------------------------------------------

    def _load_shards(self, url: str, restore: Restore) -> bytes:
        """Wait for a save still on its way, require the commit, and restore the states in place.

        Returns:
            The rest of the checkpoint, as saved (read it with :meth:`_lightning_state`).

        Raises:
            S3NotFoundError: if nothing is committed at ``url``.
            BackgroundSaveError: if a background save failed.
        """
        self._require_committed(url)
        return self._s3_state_dicts.load(restore, self._s3_access(), url)

    def _lightning_state(self, raw: bytes, url: str, weights_only: bool | None) -> dict[str, Any]:
        """The rest of the checkpoint (everything but the model and optimizer states) from its bytes."""
        if not raw:
            raise ValueError(
                f"{url} is a sharded checkpoint without Lightning's state (item {LIGHTNING_STATE_KEY!r}); "
                "it was not saved by S3FSDPStrategy or S3ModelParallelStrategy: load it with dcp.load"
            )
        # Lightning 2.6 passes False unless told otherwise, 2.4 passes nothing: keep both working.
        loaded = torch.load(io.BytesIO(raw), weights_only=bool(weights_only), map_location="cpu")
        assert isinstance(loaded, dict)
        return loaded

    def _load_locally(self, *args: Any, weights_only: bool | None) -> dict[str, Any]:
        """Lightning's own ``load_checkpoint(*args[, weights_only])``, for a path that is not on S3."""
        load = cast(Any, super()).load_checkpoint
        if weights_only is None:  # Lightning 2.4's signature has no weights_only
            return cast(dict[str, Any], load(*args))
        return cast(dict[str, Any], load(*args, weights_only))

    def _require_committed(self, url: str) -> None:
        self._wait_for_s3_saves()  # the path may be one still being saved
        with self._s3_access().store() as store:
            if not is_committed(store, url):
                raise S3NotFoundError(
                    f"no committed sharded checkpoint at {url} (its .metadata commit is missing: the save "
                    "did not finish, or the path is wrong); list the dirpath with `s3ckpt ls`"
                )

    # -- background saves, waiting and removal ---------------------------------------------------

    def _s3_async_saves(self) -> ShardedAsyncSaves | None:
        """The background saves, when the strategy's ``S3CheckpointIO`` saves asynchronously."""
        io_ = self._s3_checkpoint_io()
        if io_ is None or not io_.async_checkpointing:
            return None
        if self._s3_async is None:
            self._s3_async = ShardedAsyncSaves(io_.settings.max_pending_saves)
        return self._s3_async

    def wait_for_saves(self) -> None:
        """Wait for every background sharded save and the removals behind it (call on all ranks).

        Lightning's Trainer waits at teardown; a Fabric loop calls this (or ``fabric.strategy.teardown()``)
        before the process ends, so that its last sharded save is committed.

        Raises:
            BackgroundSaveError: if one of them failed.
        """
        self._wait_for_s3_saves()

    def _wait_for_s3_saves(self) -> None:
        if self._s3_async is not None:
            self._s3_async.wait()

    def teardown(self) -> None:
        """Wait for the background sharded saves, then tear down as Lightning does.

        Raises:
            BackgroundSaveError: if a background save failed.
        """
        try:
            if self._s3_async is not None:
                saves, self._s3_async = self._s3_async, None
                saves.close()
        finally:
            cast(Any, super()).teardown()

    def _remove_from_s3(self, url: str) -> None:
        """On global rank 0: delete a sharded checkpoint (commit first), else defer to the CheckpointIO;
        after the saves submitted before, and skipped if one of them fails."""
        if not self.is_global_zero:
            return
        if self._s3_async is not None:
            self._s3_async.remove_after_pending(url, functools.partial(self._remove_now, url))
            return
        self._remove_now(url)

    def _remove_now(self, url: str) -> None:
        with self._s3_access().store() as store:
            prefix = normalize_s3_url(url).rstrip("/")
            if next(iter(store.iter_objects(prefix + "/")), None) is not None:
                delete_sharded_checkpoint(store, prefix)
                return
            if self.checkpoint_io is None:  # Fabric without a plugin: no saves of its own to wait for
                store.delete(prefix)
                return
        # A single object: the CheckpointIO removes it (after its pending asynchronous saves, if any).
        self.checkpoint_io.remove_checkpoint(url)

    # -- S3 settings -----------------------------------------------------------------------------

    def _s3_access(self) -> S3Access:
        return S3Access(self._s3_checkpoint_io())

    def _s3_checkpoint_io(self) -> S3CheckpointIO | None:
        """The strategy's ``S3CheckpointIO``, whose S3 settings (endpoint, credentials, sizes) apply here."""
        plugin = self.checkpoint_io
        return plugin if isinstance(plugin, S3CheckpointIO) else None
