"""Lightning Fabric's sharded strategies, saving to and loading from ``s3://`` through DCP on S3.

Fabric's ``ModelParallelStrategy`` and ``FSDPStrategy`` save the shards with DCP to a local folder (an
``s3://`` URL becomes the folder ``s3:/``) and the rest of the user's state to a separate ``meta.pt``.
:class:`S3FabricModelParallelStrategy` and :class:`S3FabricFSDPStrategy` replace ``save_checkpoint`` /
``load_checkpoint`` for ``s3://`` paths only: every rank streams its model and optimizer shards through
:class:`~s3_checkpoint_io.dcp.S3StorageWriter`, and everything else in the state (step counters,
schedulers' state, plain values) is one more item of the same save, so the single commit PUT publishes
all of it at once, as under the Trainer's :mod:`s3_checkpoint_io.strategies.trainer`.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager
from typing import Any, Literal, cast

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.strategies.fsdp import FSDPStrategy
from lightning.fabric.strategies.model_parallel import ModelParallelStrategy, _has_dtensor_modules
from lightning.fabric.strategies.strategy import _validate_keys_for_strict_loading
from lightning.fabric.utilities.types import _PATH, _Stateful
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.nn import Module
from torch.optim import Optimizer

from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.strategies.trainer import LIGHTNING_STATE_KEY, _S3ShardedCheckpoints

_State = dict[str, Module | Optimizer | Any]


class _S3FabricCheckpoints(_S3ShardedCheckpoints):
    """What both Fabric strategies share: the plugin, the checks, the user's state besides the shards."""

    _checkpoint_io: CheckpointIO | None  # set by Lightning's Strategy.__init__

    @property
    def checkpoint_io(self) -> Any:  # Lightning's type, but None when no plugin was given
        """Fabric's ``S3CheckpointIO`` plugin, whose S3 settings (endpoint, sizes) the saves use, or None
        (then the ``AWS_*`` environment's apply)."""
        return self._checkpoint_io if isinstance(self._checkpoint_io, S3CheckpointIO) else None

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        # Lightning's strategies refuse every plugin, as they write with DCP themselves; S3's settings apply.
        if not isinstance(io, S3CheckpointIO):
            raise TypeError(
                f"{type(self).__name__} takes only an S3CheckpointIO plugin (for its S3 settings), "
                f"got {type(io).__name__}"
            )
        self._checkpoint_io = io

    def _check_s3_save(self, storage_options: Any, filter: Any) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if filter is not None:
            raise NotImplementedError(f"{type(self).__name__} does not save filtered sharded checkpoints")

    def _commit_to_s3(self, url: str, shards: dict[str, Any], state: _State) -> None:
        """One DCP save of ``shards`` plus (from rank 0) every non-model, non-optimizer entry of ``state``."""
        if self.global_rank == 0:  # the other ranks' copies are the same (Lightning keeps rank 0's)
            rest = {
                key: obj.state_dict() if isinstance(obj, _Stateful) else obj
                for key, obj in state.items()
                if not isinstance(obj, Module | Optimizer)
            }
            buffer = io.BytesIO()
            torch.save(rest, buffer)
            shards[LIGHTNING_STATE_KEY] = buffer.getvalue()
        dcp_save(shards, storage_writer=self._s3_writer(url))

    def _load_with_lightning(
        self, path: _PATH, state: Module | Optimizer | _State | None, strict: bool, weights_only: bool | None
    ) -> dict[str, Any]:
        """Lightning's own load, for a path that is not on S3."""
        load = cast(Any, super()).load_checkpoint
        if weights_only is None:  # Lightning 2.4's signature has no weights_only
            return cast(dict[str, Any], load(path, state, strict))
        return cast(dict[str, Any], load(path, state, strict, weights_only))

    def _restore_rest(
        self, state: _State, raw: bytes, url: str, strict: bool, weights_only: bool | None
    ) -> dict[str, Any]:
        """Put the requested non-model, non-optimizer entries back into ``state``; return the others."""
        rest = self._load_lightning_state(raw, url, weights_only)
        requested = {key for key, obj in state.items() if not isinstance(obj, Module | Optimizer)}
        _validate_keys_for_strict_loading(requested, rest.keys(), strict=strict)
        for key in requested & rest.keys():
            value = rest.pop(key)
            if isinstance(state[key], _Stateful):
                state[key].load_state_dict(value)
            else:
                state[key] = value
        return rest


def _require_dict(strategy: object, state: object) -> _State:
    if not isinstance(state, dict):
        raise TypeError(
            f"{type(strategy).__name__}.load_checkpoint from s3:// needs state={{'model': model, ...}} "
            f"(got {type(state).__name__})"
        )
    return cast(_State, state)


def _the_model(state: _State, is_sharded: Any) -> Module:
    """The one model set up by the strategy in ``state`` (one model per checkpoint, as in Lightning)."""
    modules = [obj for obj in state.values() if is_sharded(obj)]
    if len(modules) != 1:
        raise ValueError(
            f"found {len(modules)} sharded models in the state: pass exactly one model set up by "
            "fabric.setup, e.g. state={'model': model, 'optimizer': optimizer, ...}"
        )
    module = modules[0]
    assert isinstance(module, Module)
    return module


class S3FabricModelParallelStrategy(_S3FabricCheckpoints, ModelParallelStrategy):
    """Fabric's ``ModelParallelStrategy`` (FSDP2 / tensor parallel) whose checkpoints go to ``s3://``.

    Takes the same arguments as Lightning's. ``fabric.save("s3://...", state)`` (all ranks) streams
    every rank's shards through :class:`~s3_checkpoint_io.dcp.S3StorageWriter` (settings from Fabric's
    ``S3CheckpointIO`` plugin, if any, else the ``AWS_*`` environment); one metadata PUT commits the
    model, the optimizers and the rest of ``state``. ``fabric.load`` reads a committed checkpoint only.
    Local paths go to Lightning unchanged. Runs on CPU with gloo as well as on GPUs.

    Raises:
        ValueError: on saving to ``s3://`` with ``save_distributed_checkpoint=False``, or with a state
            holding no (or several) distributed models.
        NotImplementedError: on saving to ``s3://`` with a ``filter`` (as Lightning's sharded save).
        TypeError: if Fabric is given a checkpoint plugin other than ``S3CheckpointIO``.
    """

    @override
    def save_checkpoint(
        self,
        path: _PATH,
        state: _State,
        storage_options: Any | None = None,
        filter: dict[str, Any] | None = None,
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (call on all ranks), or defer to Lightning."""
        url = self._broadcast_url(path)
        if url is None:
            return super().save_checkpoint(path, state, storage_options, filter)
        self._check_s3_save(storage_options, filter)
        if not self._save_distributed_checkpoint:
            raise ValueError(
                f"{type(self).__name__} saves to s3:// only as a sharded checkpoint: leave "
                "save_distributed_checkpoint=True"
            )
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        module = _the_model(state, _has_dtensor_modules)
        shards: dict[str, Any] = {}
        for key, obj in state.items():
            if isinstance(obj, Module):
                shards[key] = get_model_state_dict(obj)
            elif isinstance(obj, Optimizer):
                shards[key] = get_optimizer_state_dict(module, obj)
        self._commit_to_s3(url, shards, state)
        return None

    @override
    def load_checkpoint(
        self,
        path: _PATH,
        state: Module | Optimizer | _State | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Restore the model and optimizers of ``state`` in place, and its other keys; return the rest.

        Raises:
            S3NotFoundError: if nothing is committed at an ``s3://`` path.
            TypeError: if ``state`` is not a dict holding the distributed model (for ``s3://``).
            KeyError: with ``strict``, if a requested key is not in the checkpoint.
        """
        url = self._broadcast_url(path)
        if url is None:
            return self._load_with_lightning(path, state, strict, weights_only)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        state = _require_dict(self, state)
        module = _the_model(state, _has_dtensor_modules)
        modules = {key: obj for key, obj in state.items() if isinstance(obj, Module)}
        optimizers = {key: obj for key, obj in state.items() if isinstance(obj, Optimizer)}
        self._require_committed(url)
        shards: dict[str, Any] = {key: get_model_state_dict(obj) for key, obj in modules.items()}
        shards.update({key: get_optimizer_state_dict(module, obj) for key, obj in optimizers.items()})
        shards[LIGHTNING_STATE_KEY] = b""
        dcp_load(shards, storage_reader=self._s3_reader(url))
        for key, obj in modules.items():
            obj.load_state_dict(shards[key], strict=strict)
        for key, optimizer in optimizers.items():
            set_optimizer_state_dict(
                module, optimizer, optim_state_dict=shards[key], options=StateDictOptions(cpu_offload=True)
            )
        return self._restore_rest(state, shards[LIGHTNING_STATE_KEY], url, strict, weights_only)


class S3FabricFSDPStrategy(_S3FabricCheckpoints, FSDPStrategy):
    """Fabric's ``FSDPStrategy`` (FSDP version 1) whose sharded checkpoints go to ``s3://``.

    Takes the same arguments as Lightning's (as keywords), but ``state_dict_type`` defaults to
    ``"sharded"``. Saving and loading work as in :class:`S3FabricModelParallelStrategy`. FSDP1 needs a
    GPU in torch: this class's save and load of a real FSDP model are not run by the CPU test suite
    (its checks and the shared parts are).

    Args:
        state_dict_type: ``"sharded"``; ``"full"`` works for local paths only.
        **kwargs: Lightning's ``FSDPStrategy`` keyword arguments.

    Raises:
        ValueError: on saving to ``s3://`` with ``state_dict_type="full"``, or with a state holding no
            (or several) FSDP models.
        NotImplementedError: on saving to ``s3://`` with a ``filter``.
        TypeError: if Fabric is given a checkpoint plugin other than ``S3CheckpointIO``.
    """

    def __init__(self, *, state_dict_type: Literal["full", "sharded"] = "sharded", **kwargs: Any) -> None:
        super().__init__(state_dict_type=state_dict_type, **kwargs)

    @override
    def save_checkpoint(
        self,
        path: _PATH,
        state: _State,
        storage_options: Any | None = None,
        filter: dict[str, Any] | None = None,
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (call on all ranks), or defer to Lightning."""
        url = self._broadcast_url(path)
        if url is None:
            return super().save_checkpoint(path, state, storage_options, filter)
        self._check_s3_save(storage_options, filter)
        if self._state_dict_type != "sharded":
            raise ValueError(
                f"{type(self).__name__} saves to s3:// only sharded checkpoints: pass "
                "state_dict_type='sharded' (the default here)"
            )
        from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context, _has_fsdp_modules
        from torch.distributed.fsdp import FullyShardedDataParallel

        module = _the_model(state, _has_fsdp_modules)
        shards: dict[str, Any] = {}
        with cast(AbstractContextManager[None], _get_sharded_state_dict_context(module)):
            for key, obj in state.items():
                if isinstance(obj, Module):
                    shards[key] = obj.state_dict()
                elif isinstance(obj, Optimizer):
                    shards[key] = FullyShardedDataParallel.optim_state_dict(module, obj)
        self._commit_to_s3(url, shards, state)
        return None

    @override
    def load_checkpoint(
        self,
        path: _PATH,
        state: Module | Optimizer | _State | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Restore the model and optimizers of ``state`` in place, and its other keys; return the rest.

        Raises:
            S3NotFoundError: if nothing is committed at an ``s3://`` path.
            TypeError: if ``state`` is not a dict holding the FSDP model (for ``s3://``).
            KeyError: with ``strict``, if a requested key is not in the checkpoint.
        """
        url = self._broadcast_url(path)
        if url is None:
            return self._load_with_lightning(path, state, strict, weights_only)
        from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context, _has_fsdp_modules
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel

        state = _require_dict(self, state)
        module = _the_model(state, _has_fsdp_modules)
        modules = {key: obj for key, obj in state.items() if isinstance(obj, Module)}
        optimizers = {key: obj for key, obj in state.items() if isinstance(obj, Optimizer)}
        self._require_committed(url)
        with cast(AbstractContextManager[None], _get_sharded_state_dict_context(module)):
            shards: dict[str, Any] = {key: obj.state_dict() for key, obj in modules.items()}
            shards[LIGHTNING_STATE_KEY] = b""
            dcp_load(shards, storage_reader=self._s3_reader(url))
            for key, obj in modules.items():
                obj.load_state_dict(shards[key], strict=strict)
            model_key = next(key for key, obj in modules.items() if obj is module)
            for key, optimizer in optimizers.items():
                loaded = load_sharded_optimizer_state_dict(
                    model_state_dict=shards[model_key], optimizer_key=key, storage_reader=self._s3_reader(url)
                )
                flattened = FullyShardedDataParallel.optim_state_dict_to_load(
                    optim_state_dict=loaded[key], model=module, optim=optimizer
                )
                optimizer.load_state_dict(flattened)
        return self._restore_rest(state, shards[LIGHTNING_STATE_KEY], url, strict, weights_only)
