"""Lightning Fabric's sharded strategies, saving to and loading from ``s3://`` through DCP on S3.

Fabric's ``ModelParallelStrategy`` and ``FSDPStrategy`` save the shards with DCP to a local folder (an
``s3://`` URL becomes the folder ``s3:/``) and the rest of the user's state to a separate ``meta.pt``.
:class:`S3FabricModelParallelStrategy` and :class:`S3FabricFSDPStrategy` replace ``save_checkpoint`` /
``load_checkpoint`` for ``s3://`` paths only: every rank streams its model and optimizer shards through
:class:`~s3_checkpoint_io.dcp.S3StorageWriter`, and everything else in the state (step counters,
schedulers' state, plain values) is one more item of the same save, so the single commit PUT publishes
all of it at once, as under the Trainer's :mod:`s3_checkpoint_io.strategies.trainer`.

With Fabric's ``S3CheckpointIO(async_checkpointing=True)`` the ``s3://`` saves run in the background as
the Trainer's do (:mod:`s3_checkpoint_io.strategies.async_saves`): ``fabric.save`` returns once the
shards are staged in host memory, ``fabric.load``, the next saves beyond ``max_pending_saves``,
``wait_for_saves()`` and ``teardown()`` wait for them, and ``remove_checkpoint`` waits for the newer
commits. Fabric tears nothing down itself: call ``fabric.strategy.wait_for_saves()`` before the process
ends.

The recipe is :mod:`s3_checkpoint_io.strategies.sharded_checkpoints`; this module says which objects
it saves under Fabric's API.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.strategies.fsdp import FSDPStrategy
from lightning.fabric.strategies.model_parallel import ModelParallelStrategy
from lightning.fabric.utilities.types import _PATH, _Stateful
from torch.nn import Module
from torch.optim import Optimizer

from s3_checkpoint_io.lightning import lightning_internals
from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.strategies.sharded_checkpoints import ShardedCheckpoints
from s3_checkpoint_io.strategies.state_dicts import DTENSOR, FSDP1, Restore
from s3_dirpath_utils import is_s3_url

__all__ = ["S3FabricFSDPStrategy", "S3FabricModelParallelStrategy"]

_State = dict[str, Module | Optimizer | Any]


class _FabricShardedCheckpoints(ShardedCheckpoints):
    """Fabric's checkpoint methods, routed through the recipe for ``s3://`` paths, and its plugin."""

    _checkpoint_io: CheckpointIO | None  # set by Lightning's Strategy.__init__

    @property
    def checkpoint_io(self) -> Any:  # Lightning's type, but None when no plugin was given
        """Fabric's ``S3CheckpointIO`` plugin, whose S3 settings (endpoint, sizes, asynchronous saves) the
        saves use, or None (then the ``AWS_*`` environment's apply and saves are synchronous)."""
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

    def save_checkpoint(
        self,
        path: _PATH,
        state: _State,
        storage_options: Any | None = None,
        filter: dict[str, Any] | None = None,
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (call on all ranks), or defer to Lightning.

        Raises:
            BackgroundSaveError: if an earlier asynchronous save failed (then this one is not started).
        """
        url = self._s3_url(path)
        if url is None:
            cast(Any, super()).save_checkpoint(path, state, storage_options, filter)
            return None
        self._check_s3_save(storage_options, filter)
        shards = self._s3_state_dicts.save_states(self._the_model(state), state)
        self._commit(url, shards, _the_rest(state) if self.global_rank == 0 else None)
        return None

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
            BackgroundSaveError: if a background save failed.
        """
        url = self._s3_url(path)
        if url is None:
            return self._load_locally(path, state, strict, weights_only=weights_only)
        state = self._require_dict(state)
        model = self._the_model(state)
        modules = {key: obj for key, obj in state.items() if isinstance(obj, Module)}
        optimizers = {key: obj for key, obj in state.items() if isinstance(obj, Optimizer)}
        raw = self._load_shards(url, Restore(model, modules, optimizers, strict))
        return self._restore_rest(state, raw, url, strict, weights_only)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Delete the sharded checkpoint at an ``s3://`` path (commit first, then all its objects).

        Call on every rank (rank 0 deletes). With asynchronous saves it runs once every save started
        before has committed, and is skipped (with a warning) if one of them fails.

        Raises:
            ValueError: for a local path (Fabric's strategies remove nothing themselves).
        """
        if not is_s3_url(path):
            raise ValueError(
                f"{type(self).__name__}.remove_checkpoint removes s3:// checkpoints only: {path}"
            )
        self._remove_from_s3(str(path))

    def _restore_rest(
        self, state: _State, raw: bytes, url: str, strict: bool, weights_only: bool | None
    ) -> dict[str, Any]:
        """Put the requested non-model, non-optimizer entries back into ``state``; return the others."""
        rest = self._lightning_state(raw, url, weights_only)
        requested = {key for key, obj in state.items() if not isinstance(obj, Module | Optimizer)}
        lightning_internals.validate_keys_for_strict_loading(requested, rest.keys(), strict=strict)
        for key in requested & rest.keys():
            value = rest.pop(key)
            if isinstance(state[key], _Stateful):
                state[key].load_state_dict(value)
            else:
                state[key] = value
        return rest

    def _require_dict(self, state: object) -> _State:
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__name__}.load_checkpoint from s3:// needs state={{'model': model, ...}} "
                f"(got {type(state).__name__})"
            )
        return cast(_State, state)

    def _the_model(self, state: _State) -> Module:
        """The one model set up by the strategy in ``state`` (one model per checkpoint, as in Lightning)."""
        modules = [obj for obj in state.values() if self._s3_state_dicts.is_sharded(obj)]
        if len(modules) != 1:
            raise ValueError(
                f"found {len(modules)} sharded models in the state: pass exactly one model set up by "
                "fabric.setup, e.g. state={'model': model, 'optimizer': optimizer, ...}"
            )
        module = modules[0]
        assert isinstance(module, Module)
        return module


def _the_rest(state: _State) -> dict[str, Any]:
    """Every entry of ``state`` but the models and optimizers, stateful ones as their ``state_dict()``."""
    return {
        key: obj.state_dict() if isinstance(obj, _Stateful) else obj
        for key, obj in state.items()
        if not isinstance(obj, Module | Optimizer)
    }


class S3FabricModelParallelStrategy(_FabricShardedCheckpoints, ModelParallelStrategy):
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

    _s3_state_dicts = DTENSOR


class S3FabricFSDPStrategy(_FabricShardedCheckpoints, FSDPStrategy):
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

    _s3_state_dicts = FSDP1

    def __init__(self, *, state_dict_type: Literal["full", "sharded"] = "sharded", **kwargs: Any) -> None:
        super().__init__(state_dict_type=state_dict_type, **kwargs)
