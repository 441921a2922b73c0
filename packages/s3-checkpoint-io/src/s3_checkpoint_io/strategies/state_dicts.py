"""What a sharded ``s3://`` checkpoint holds, and how each kind of sharded model builds and restores it.

One DCP save holds the model state(s) under their keys (``"state_dict"`` or ``"model"`` for the
Trainer, the user's keys for Fabric), each optimizer's state under its key (``"optimizer_<i>"`` for the
Trainer), and :data:`LIGHTNING_STATE_KEY`. Two kinds of sharded model build those states differently:

- :data:`DTENSOR` (``ModelParallelStrategy``: FSDP2 / tensor parallel): torch's
  ``get_model_state_dict`` / ``get_optimizer_state_dict`` and their ``set_*`` counterparts;
- :data:`FSDP1` (``FSDPStrategy``): the module's own ``state_dict`` under Lightning's sharded
  state-dict context, and ``FullyShardedDataParallel``'s optimizer state dicts (loaded one optimizer
  at a time, as Lightning does).

Both the Trainer and the Fabric strategies of a kind go through the same save and load here. FSDP1 needs
a GPU in torch: its methods are Lightning's own FSDP1 steps, moved here unchanged, and are not run by
the CPU test suite.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, cast

from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.nn import Module
from torch.optim import Optimizer

from s3_checkpoint_io.lightning import lightning_internals
from s3_checkpoint_io.strategies.s3_access import S3Access

LIGHTNING_STATE_KEY = "lightning_checkpoint"
"""The DCP item holding everything of Lightning's checkpoint but the model and optimizer states
(``torch.save`` bytes of that dict: what Lightning writes to ``meta.pt`` on local disk)."""


@dataclass(frozen=True)
class Restore:
    """What a load restores in place.

    Args:
        model: the sharded model (one of ``modules``) the optimizers belong to.
        modules: the models to restore, by their key in the checkpoint.
        optimizers: the optimizers to restore, by their key in the checkpoint.
        strict: whether a model's keys must match the checkpoint's exactly.
    """

    model: Module
    modules: Mapping[str, Module]
    optimizers: Mapping[str, Optimizer]
    strict: bool


class StateDictKind(ABC):
    """How one kind of sharded model is saved to and restored from a DCP checkpoint on S3."""

    saves_only: str  # what a save to s3:// needs, for the message refusing the strategy's settings

    def refusal(self, strategy: Any) -> str | None:
        """Why ``strategy``'s settings cannot save to ``s3://`` (raised as ``ValueError``), or None."""
        if self.saves_sharded(strategy):
            return None
        return f"{type(strategy).__name__} saves to s3:// only {self.saves_only}"

    def save_states(self, model: Module, state: Mapping[str, object]) -> dict[str, Any]:
        """The sharded state dict of every model and optimizer in ``state``, under its key.

        Args:
            model: the sharded model the optimizers belong to.
            state: what the user saves (other entries are skipped).
        """
        shards: dict[str, Any] = {}
        with self.state_dict_context(model):
            for key, obj in state.items():
                if isinstance(obj, Module):
                    shards[key] = self.model_state(obj)
                elif isinstance(obj, Optimizer):
                    shards[key] = self.optimizer_state(model, obj)
        return shards

    @abstractmethod
    def saves_sharded(self, strategy: Any) -> bool:
        """Whether ``strategy`` is set to save a sharded checkpoint (the only kind it saves to ``s3://``)."""

    @abstractmethod
    def is_sharded(self, obj: object) -> bool:
        """Whether ``obj`` is a model this kind shards (the one a checkpoint is built around)."""

    @abstractmethod
    def state_dict_context(self, model: Module) -> AbstractContextManager[None]:
        """The context the model and optimizer state dicts are taken in."""

    @abstractmethod
    def model_state(self, module: Module) -> dict[str, Any]:
        """``module``'s sharded state dict (in :meth:`state_dict_context`)."""

    @abstractmethod
    def optimizer_state(self, model: Module, optimizer: Optimizer) -> dict[str, Any]:
        """The sharded state dict of ``optimizer`` over ``model`` (in :meth:`state_dict_context`)."""

    @abstractmethod
    def load(self, restore: Restore, access: S3Access, url: str) -> bytes:
        """Restore models and optimizers in place from the committed checkpoint at ``url``.

        Args:
            restore: what to restore.
            access: opens the storage readers.
            url: the checkpoint's ``s3://`` prefix.

        Returns:
            The :data:`LIGHTNING_STATE_KEY` item (empty when the checkpoint has none).
        """


class DTensorStateDicts(StateDictKind):
    """Models sharded with DTensors (FSDP2, tensor parallel): ``ModelParallelStrategy``."""

    saves_only = "as a sharded checkpoint: leave save_distributed_checkpoint=True"

    def saves_sharded(self, strategy: Any) -> bool:
        """``save_distributed_checkpoint=True``."""
        return lightning_internals.saves_distributed_checkpoint(strategy)

    def is_sharded(self, obj: object) -> bool:
        """Lightning's test for a module holding DTensor parameters."""
        return lightning_internals.has_dtensor_modules(obj)

    def state_dict_context(self, model: Module) -> AbstractContextManager[None]:
        """None needed: torch's ``get_*_state_dict`` return the sharded states."""
        return nullcontext()

    def model_state(self, module: Module) -> dict[str, Any]:
        """``get_model_state_dict``."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module)

    def optimizer_state(self, model: Module, optimizer: Optimizer) -> dict[str, Any]:
        """``get_optimizer_state_dict``."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return cast(dict[str, Any], get_optimizer_state_dict(model, optimizer))

    def load(self, restore: Restore, access: S3Access, url: str) -> bytes:
        """One ``dcp.load`` of every model and optimizer; optimizer states set with CPU offload."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        model = restore.model
        shards: dict[str, Any] = {key: self.model_state(obj) for key, obj in restore.modules.items()}
        shards.update({key: self.optimizer_state(model, obj) for key, obj in restore.optimizers.items()})
        shards[LIGHTNING_STATE_KEY] = b""
        dcp_load(shards, storage_reader=access.reader(url))
        for key, obj in restore.modules.items():
            obj.load_state_dict(shards[key], strict=restore.strict)
        for key, optimizer in restore.optimizers.items():
            set_optimizer_state_dict(
                model, optimizer, optim_state_dict=shards[key], options=StateDictOptions(cpu_offload=True)
            )
        return cast(bytes, shards[LIGHTNING_STATE_KEY])


class FSDP1StateDicts(StateDictKind):
    """Models wrapped in ``FullyShardedDataParallel`` (FSDP version 1): ``FSDPStrategy``."""

    saves_only = "sharded checkpoints: pass state_dict_type='sharded' (the default here)"

    def saves_sharded(self, strategy: Any) -> bool:
        """``state_dict_type="sharded"``."""
        return lightning_internals.fsdp_state_dict_type(strategy) == "sharded"

    def is_sharded(self, obj: object) -> bool:
        """Lightning's test for a module holding FSDP1 modules."""
        return lightning_internals.has_fsdp_modules(obj)

    def state_dict_context(self, model: Module) -> AbstractContextManager[None]:
        """Lightning's sharded state-dict context (``StateDictType.SHARDED_STATE_DICT``, CPU offload)."""
        return cast(AbstractContextManager[None], lightning_internals.fsdp_sharded_state_dict_context(model))

    def model_state(self, module: Module) -> dict[str, Any]:
        """The module's own ``state_dict``."""
        return module.state_dict()

    def optimizer_state(self, model: Module, optimizer: Optimizer) -> dict[str, Any]:
        """``FullyShardedDataParallel.optim_state_dict``."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.optim_state_dict(model, optimizer)

    def load(self, restore: Restore, access: S3Access, url: str) -> bytes:
        """One ``dcp.load`` of the models, then one ``load_sharded_optimizer_state_dict`` per optimizer."""
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = restore.model
        with self.state_dict_context(model):
            shards: dict[str, Any] = {key: self.model_state(obj) for key, obj in restore.modules.items()}
            shards[LIGHTNING_STATE_KEY] = b""
            dcp_load(shards, storage_reader=access.reader(url))
            for key, obj in restore.modules.items():
                obj.load_state_dict(shards[key], strict=restore.strict)
            model_key = next(key for key, obj in restore.modules.items() if obj is model)
            for key, optimizer in restore.optimizers.items():
                loaded = load_sharded_optimizer_state_dict(
                    model_state_dict=shards[model_key], optimizer_key=key, storage_reader=access.reader(url)
                )
                flattened = FullyShardedDataParallel.optim_state_dict_to_load(
                    optim_state_dict=loaded[key], model=model, optim=optimizer
                )
                optimizer.load_state_dict(flattened)
        return cast(bytes, shards[LIGHTNING_STATE_KEY])


DTENSOR = DTensorStateDicts()
"""The kind of ``ModelParallelStrategy`` (Trainer and Fabric)."""

FSDP1 = FSDP1StateDicts()
"""The kind of ``FSDPStrategy`` (Trainer and Fabric)."""
