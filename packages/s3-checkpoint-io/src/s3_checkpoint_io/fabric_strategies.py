"""Lightning Fabric's sharded strategy, saving to and loading from ``s3://`` through DCP on S3.

Fabric's ``ModelParallelStrategy.save_checkpoint`` writes the shards with DCP to a local folder (an
``s3://`` URL becomes the folder ``s3:/``) and the rest of the user's state to a separate ``meta.pt``.
:class:`S3FabricModelParallelStrategy` replaces ``save_checkpoint``/``load_checkpoint`` for ``s3://``
paths only: every rank streams its model and optimizer shards through
:class:`~s3_checkpoint_io.dcp.S3StorageWriter`, and everything else in the state (step counters,
schedulers' state, plain values) is one more item of the same save, so the single commit PUT publishes
all of it at once, as under the Trainer's :class:`~s3_checkpoint_io.strategies.S3ModelParallelStrategy`.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.strategies.model_parallel import ModelParallelStrategy, _has_dtensor_modules
from lightning.fabric.strategies.strategy import _validate_keys_for_strict_loading
from lightning.fabric.utilities.types import _PATH, _Stateful
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.nn import Module
from torch.optim import Optimizer

from s3_checkpoint_io._compat import override
from s3_checkpoint_io.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.strategies import LIGHTNING_STATE_KEY, _S3ShardedCheckpoints


class S3FabricModelParallelStrategy(_S3ShardedCheckpoints, ModelParallelStrategy):
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

    @property  # type: ignore[override]  # None: no plugin given, S3 settings come from the environment
    def checkpoint_io(self) -> S3CheckpointIO | None:
        """Fabric's ``S3CheckpointIO`` plugin, whose S3 settings (endpoint, sizes) the saves use."""
        return self._checkpoint_io if isinstance(self._checkpoint_io, S3CheckpointIO) else None

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        # Lightning's strategy refuses every plugin, as it writes with DCP itself; its S3 settings apply here.
        if not isinstance(io, S3CheckpointIO):
            raise TypeError(
                f"{type(self).__name__} takes only an S3CheckpointIO plugin (for its S3 settings), "
                f"got {type(io).__name__}"
            )
        self._checkpoint_io = io

    @override
    def save_checkpoint(
        self,
        path: _PATH,
        state: dict[str, Module | Optimizer | Any],
        storage_options: Any | None = None,
        filter: dict[str, Any] | None = None,
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (call on all ranks), or defer to Lightning."""
        url = self._broadcast_url(path)
        if url is None:
            return super().save_checkpoint(path, state, storage_options, filter)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options")
        if filter is not None:
            raise NotImplementedError(f"{type(self).__name__} does not save filtered sharded checkpoints")
        if not self._save_distributed_checkpoint:
            raise ValueError(
                f"{type(self).__name__} saves to s3:// only as a sharded checkpoint: leave "
                "save_distributed_checkpoint=True"
            )
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        module = _the_distributed_module(state)
        shards: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, obj in state.items():
            if isinstance(obj, Module):
                shards[key] = get_model_state_dict(obj)
            elif isinstance(obj, Optimizer):
                shards[key] = get_optimizer_state_dict(module, obj)
            else:
                rest[key] = obj.state_dict() if isinstance(obj, _Stateful) else obj
        if self.global_rank == 0:  # the other ranks' copies are the same (Lightning keeps rank 0's)
            buffer = io.BytesIO()
            torch.save(rest, buffer)
            shards[LIGHTNING_STATE_KEY] = buffer.getvalue()
        dcp_save(shards, storage_writer=self._s3_writer(url))
        return None

    @override
    def load_checkpoint(
        self,
        path: _PATH,
        state: Module | Optimizer | dict[str, Module | Optimizer | Any] | None = None,
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
            if weights_only is None:  # Lightning 2.4's signature has no weights_only
                return super().load_checkpoint(path, state, strict)
            return super().load_checkpoint(path, state, strict, weights_only)
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__name__}.load_checkpoint from s3:// needs state={{'model': model, ...}} "
                f"(got {type(state).__name__})"
            )
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        module = _the_distributed_module(state)
        optimizers = {key: obj for key, obj in state.items() if isinstance(obj, Optimizer)}
        modules = {key: obj for key, obj in state.items() if isinstance(obj, Module)}
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
        rest = self._load_lightning_state(shards[LIGHTNING_STATE_KEY], url, weights_only)
        requested = state.keys() - modules.keys() - optimizers.keys()
        _validate_keys_for_strict_loading(requested, rest.keys(), strict=strict)
        for key in requested & rest.keys():
            value = rest.pop(key)
            if isinstance(state[key], _Stateful):
                state[key].load_state_dict(value)
            else:
                state[key] = value
        return rest


def _the_distributed_module(state: dict[str, Any]) -> Module:
    """The one model set up by the strategy in ``state`` (DCP saves one model per checkpoint)."""
    modules = [obj for obj in state.values() if _has_dtensor_modules(obj)]
    if len(modules) != 1:
        raise ValueError(
            f"found {len(modules)} distributed models in the state: pass exactly one model set up by "
            "fabric.setup, e.g. state={'model': model, 'optimizer': optimizer, ...}"
        )
    module = modules[0]
    assert isinstance(module, Module)
    return module
