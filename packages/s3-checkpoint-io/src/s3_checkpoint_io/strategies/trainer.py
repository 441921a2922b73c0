"""Lightning's sharded strategies, saving to and loading from an ``s3://`` dirpath through DCP on S3.

Lightning 2.4 to 2.6's ``FSDPStrategy`` and ``ModelParallelStrategy`` save a sharded checkpoint with
``dcp_save(checkpoint_id=Path(filepath))`` (an ``s3://`` URL becomes the local folder ``s3:/``), take no
storage writer (Lightning #20205) and mark completion with a separate ``meta.pt``.
:class:`S3FSDPStrategy` and :class:`S3ModelParallelStrategy` replace exactly the three checkpoint
methods for ``s3://`` paths: every rank streams its shards through
:class:`~s3_checkpoint_io.dcp.S3StorageWriter`, and the rest of Lightning's checkpoint (loops, callbacks,
hyper-parameters) is one more item of the same save, so the single commit PUT publishes all of it at
once; no ``meta.pt``, nothing visible before the commit. Local paths go to Lightning unchanged.

With the trainer's ``S3CheckpointIO(async_checkpointing=True)`` the ``s3://`` saves run through
``dcp.async_save`` (:mod:`s3_checkpoint_io.strategies.async_saves`): ``save_checkpoint`` returns once the
shards are staged in host memory, at most ``max_pending_saves`` saves are in flight, removals wait
for the newer commit, and a background failure is raised at the next save, load or teardown.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal, cast

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.lightning.model_checkpoint import SavesShardedToS3
from s3_checkpoint_io.strategies.async_saves import ShardedAsyncSaves
from s3_dirpath_utils import is_s3_url, normalize_s3_url
from s3_utils import S3ClientConfig, S3NotFoundError, S3Store, TransferConfig
from s3_utils.sharded import delete_sharded_checkpoint, is_committed

log = logging.getLogger(__name__)

LIGHTNING_STATE_KEY = "lightning_checkpoint"
"""The DCP item holding everything of Lightning's checkpoint but the model and optimizer states
(``torch.save`` bytes of that dict: what Lightning writes to ``meta.pt`` on local disk)."""


class _S3ShardedCheckpoints(SavesShardedToS3):
    """The ``s3://`` half of a sharded strategy's checkpoint methods (mixed in before the strategy)."""

    _s3_model_key: str  # the name Lightning gives the model state in the DCP state dict

    # Provided by the Lightning strategy this is mixed into.
    global_rank: int
    is_global_zero: bool
    checkpoint_io: Any
    broadcast: Callable[..., Any]

    _s3_async: ShardedAsyncSaves | None = None  # created at the first asynchronous save

    def _save_sharded_to_s3(self, checkpoint: dict[str, Any], url: str) -> None:
        """Every rank saves its shards; rank 0 adds the rest of the checkpoint; one commit publishes it."""
        state: dict[str, Any] = {self._s3_model_key: checkpoint.pop("state_dict")}
        for index, optimizer_state in enumerate(checkpoint.pop("optimizer_states", [])):
            state[f"optimizer_{index}"] = optimizer_state
        if self.global_rank == 0:  # the other ranks' copies are the same (Lightning keeps rank 0's)
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            state[LIGHTNING_STATE_KEY] = buffer.getvalue()
        saves = self._s3_async_saves()
        if saves is None:
            dcp_save(state, storage_writer=self._s3_writer(url))
        else:
            saves.save(state, url, self._s3_writer(url))

    def _s3_async_saves(self) -> ShardedAsyncSaves | None:
        """The background saves, when the trainer's ``S3CheckpointIO`` saves asynchronously."""
        io_ = self._s3_checkpoint_io()
        if io_ is None or not io_.async_checkpointing:
            return None
        if self._s3_async is None:
            self._s3_async = ShardedAsyncSaves(io_.settings.max_pending_saves)
        return self._s3_async

    def _wait_for_s3_saves(self) -> None:
        """Wait for every background save and the removals behind it (all ranks).

        Raises:
            BackgroundSaveError: if one of them failed.
        """
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

    def _load_lightning_state(self, raw: bytes, url: str, weights_only: bool | None) -> dict[str, Any]:
        if not raw:
            raise ValueError(
                f"{url} is a sharded checkpoint without Lightning's state (item {LIGHTNING_STATE_KEY!r}); "
                "it was not saved by S3FSDPStrategy or S3ModelParallelStrategy: load it with dcp.load"
            )
        # Lightning 2.6 passes False unless told otherwise, 2.4 passes nothing: keep both working.
        loaded = torch.load(io.BytesIO(raw), weights_only=bool(weights_only), map_location="cpu")
        assert isinstance(loaded, dict)
        return loaded

    def _remove_from_s3(self, url: str) -> None:
        """On global rank 0: delete a sharded checkpoint (commit first), else defer to the CheckpointIO."""
        if not self.is_global_zero:
            return
        if self._s3_async is not None:  # after the newer commits, skipped if one of them fails
            self._s3_async.remove_after_pending(url, lambda: self._remove_now(url))
            return
        self._remove_now(url)

    def _remove_now(self, url: str) -> None:
        with self._s3_store() as store:
            prefix = normalize_s3_url(url).rstrip("/")
            if next(iter(store.iter_objects(prefix + "/")), None) is not None:
                delete_sharded_checkpoint(store, prefix)
                return
        # A single object: the CheckpointIO removes it (after its pending asynchronous saves, if any).
        self.checkpoint_io.remove_checkpoint(url)

    def _require_committed(self, url: str) -> None:
        self._wait_for_s3_saves()  # the path may be one still being saved
        with self._s3_store() as store:
            if not is_committed(store, url):
                raise S3NotFoundError(
                    f"no committed sharded checkpoint at {url} (its .metadata commit is missing: the save "
                    "did not finish, or the path is wrong); list the dirpath with `s3ckpt ls`"
                )

    def _s3_writer(self, url: str) -> S3StorageWriter:
        io_ = self._s3_checkpoint_io()
        if io_ is None:
            return S3StorageWriter(url)
        return S3StorageWriter(
            url,
            chunk_size_MB=io_.settings.chunk_size_MB,
            max_concurrency=io_.settings.max_write_concurrency,
            client_config=io_.client_config,
        )

    def _s3_reader(self, url: str) -> S3StorageReader:
        io_ = self._s3_checkpoint_io()
        if io_ is None:
            return S3StorageReader(url)
        return S3StorageReader(
            url,
            chunk_size_MB=io_.settings.chunk_size_MB,
            max_concurrency=io_.settings.max_read_concurrency,
            client_config=io_.client_config,
        )

    def _s3_store(self) -> S3Store:
        io_ = self._s3_checkpoint_io()
        if io_ is None:
            return S3Store(S3ClientConfig.from_env(), TransferConfig())
        return S3Store(io_.client_config, TransferConfig(chunk_size_MB=io_.settings.chunk_size_MB))

    def _s3_checkpoint_io(self) -> S3CheckpointIO | None:
        """The trainer's ``S3CheckpointIO``, whose S3 settings (endpoint, credentials, sizes) apply here."""
        plugin = self.checkpoint_io
        return plugin if isinstance(plugin, S3CheckpointIO) else None

    def _broadcast_url(self, path: _PATH) -> str | None:
        """Rank 0's path as a normalized ``s3://`` URL, or None for a local path."""
        shared = self.broadcast(str(path))
        return normalize_s3_url(shared).rstrip("/") if is_s3_url(shared) else None


class S3ModelParallelStrategy(_S3ShardedCheckpoints, ModelParallelStrategy):
    """``ModelParallelStrategy`` (FSDP2 / tensor parallel) whose sharded checkpoints go to ``s3://``.

    Takes the same arguments as Lightning's. For an ``s3://`` path every rank streams its shards
    through :class:`~s3_checkpoint_io.dcp.S3StorageWriter` (settings from the trainer's
    ``S3CheckpointIO``, if any, else the ``AWS_*`` environment) and one metadata PUT commits the whole
    checkpoint. Runs on CPU with gloo as well as on GPUs.

    Raises:
        ValueError: on saving to ``s3://`` with ``save_distributed_checkpoint=False`` (not supported:
            use the default ``True``).
    """

    _s3_model_key = "state_dict"

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (all ranks), or defer to Lightning for local paths."""
        url = self._broadcast_url(filepath)
        if url is None:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if not self._save_distributed_checkpoint:
            raise ValueError(
                f"{type(self).__name__} saves to s3:// only as a sharded checkpoint: leave "
                "save_distributed_checkpoint=True"
            )
        self._save_sharded_to_s3(checkpoint, url)
        return None

    @override
    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Load the model and optimizer shards in place; return the rest of the checkpoint.

        Raises:
            S3NotFoundError: if nothing is committed at an ``s3://`` path.
        """
        url = self._broadcast_url(checkpoint_path)
        if url is None:
            if weights_only is None:  # Lightning 2.4's signature has no weights_only
                return super().load_checkpoint(checkpoint_path)
            return super().load_checkpoint(checkpoint_path, weights_only)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        self._require_committed(url)
        assert self.model is not None
        assert self.lightning_module is not None
        state: dict[str, Any] = {"state_dict": get_model_state_dict(self.model), LIGHTNING_STATE_KEY: b""}
        for index, optimizer in enumerate(self.optimizers):
            state[f"optimizer_{index}"] = get_optimizer_state_dict(self.model, optimizer)
        dcp_load(state, storage_reader=self._s3_reader(url))
        self.model.load_state_dict(state["state_dict"], strict=self.lightning_module.strict_loading)
        for index, optimizer in enumerate(self.optimizers):
            set_optimizer_state_dict(
                self.model,
                optimizer,
                optim_state_dict=state[f"optimizer_{index}"],
                options=StateDictOptions(cpu_offload=True),
            )
        return self._load_lightning_state(state[LIGHTNING_STATE_KEY], url, weights_only)

    @override
    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Delete a checkpoint: on ``s3://``, a sharded one's commit first, then all its objects."""
        if is_s3_url(filepath):
            self._remove_from_s3(str(filepath))
        else:
            super().remove_checkpoint(filepath)


class S3FSDPStrategy(_S3ShardedCheckpoints, FSDPStrategy):
    """``FSDPStrategy`` whose sharded checkpoints (``state_dict_type="sharded"``) go to ``s3://``.

    Takes the same arguments as Lightning's (as keywords), but ``state_dict_type`` defaults to
    ``"sharded"`` (every rank saves its own shards). Saving and loading work as in
    :class:`S3ModelParallelStrategy`. FSDP (version 1) needs a GPU in torch; the save and removal paths
    are the ones :class:`S3ModelParallelStrategy` shares and are tested on CPU.

    Args:
        state_dict_type: ``"sharded"``; ``"full"`` works for local paths only.
        **kwargs: Lightning's ``FSDPStrategy`` keyword arguments.

    Raises:
        ValueError: on saving to ``s3://`` with ``state_dict_type="full"``.
    """

    _s3_model_key = "model"

    def __init__(self, *, state_dict_type: Literal["full", "sharded"] = "sharded", **kwargs: Any) -> None:
        super().__init__(state_dict_type=state_dict_type, **kwargs)

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (all ranks), or defer to Lightning for local paths."""
        url = self._broadcast_url(filepath)
        if url is None:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if self._state_dict_type != "sharded":
            raise ValueError(
                f"{type(self).__name__} saves to s3:// only sharded checkpoints: pass "
                "state_dict_type='sharded' (the default here)"
            )
        self._save_sharded_to_s3(checkpoint, url)
        return None

    @override
    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Load the model (and, when fitting, optimizer) shards in place; return the rest.

        Raises:
            S3NotFoundError: if nothing is committed at an ``s3://`` path.
        """
        url = self._broadcast_url(checkpoint_path)
        if url is None:
            if weights_only is None:  # Lightning 2.4's signature has no weights_only
                return super().load_checkpoint(checkpoint_path)
            return super().load_checkpoint(checkpoint_path, weights_only)
        from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel

        self._require_committed(url)
        assert self.model is not None
        assert self.lightning_module is not None
        with cast(AbstractContextManager[None], _get_sharded_state_dict_context(self.model)):
            state: dict[str, Any] = {"model": self.model.state_dict(), LIGHTNING_STATE_KEY: b""}
            dcp_load(state, storage_reader=self._s3_reader(url))
            self.model.load_state_dict(state["model"], strict=self.lightning_module.strict_loading)
            if self.lightning_module.trainer.state.fn == TrainerFn.FITTING:
                for index, optimizer in enumerate(self.optimizers):
                    key = f"optimizer_{index}"
                    loaded = load_sharded_optimizer_state_dict(
                        model_state_dict=state["model"],
                        optimizer_key=key,
                        storage_reader=self._s3_reader(url),
                    )
                    flattened = FullyShardedDataParallel.optim_state_dict_to_load(
                        optim_state_dict=loaded[key], model=self.model, optim=optimizer
                    )
                    optimizer.load_state_dict(flattened)
        return self._load_lightning_state(state[LIGHTNING_STATE_KEY], url, weights_only)

    @override
    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Delete a checkpoint: on ``s3://``, a sharded one's commit first, then all its objects."""
        if is_s3_url(filepath):
            self._remove_from_s3(str(filepath))
        else:
            super().remove_checkpoint(filepath)
