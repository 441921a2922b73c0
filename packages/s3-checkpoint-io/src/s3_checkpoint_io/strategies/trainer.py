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

The recipe is :mod:`s3_checkpoint_io.strategies.sharded_checkpoints`; this module says which objects
it saves under the Trainer's API.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.trainer.states import TrainerFn
from torch.nn import Module
from torch.optim import Optimizer

from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.strategies.sharded_checkpoints import ShardedCheckpoints
from s3_checkpoint_io.strategies.state_dicts import DTENSOR, FSDP1, LIGHTNING_STATE_KEY, Restore
from s3_dirpath_utils import is_s3_url

__all__ = ["LIGHTNING_STATE_KEY", "S3FSDPStrategy", "S3ModelParallelStrategy"]


class _TrainerShardedCheckpoints(ShardedCheckpoints):
    """The Trainer's three checkpoint methods, routed through the recipe for ``s3://`` paths."""

    _s3_model_key: str  # the name Lightning gives the model state in the DCP state dict

    # Provided by the Lightning strategy this is mixed into.
    model: Module | None
    lightning_module: Any
    optimizers: list[Optimizer]

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None
    ) -> None:
        """Save a sharded checkpoint to ``s3://`` (all ranks), or defer to Lightning for local paths."""
        url = self._s3_url(filepath)
        if url is None:
            cast(Any, super()).save_checkpoint(checkpoint, filepath, storage_options)
            return None
        self._check_s3_save(storage_options)
        shards: dict[str, Any] = {self._s3_model_key: checkpoint.pop("state_dict")}
        for index, optimizer_state in enumerate(checkpoint.pop("optimizer_states", [])):
            shards[f"optimizer_{index}"] = optimizer_state
        self._commit(url, shards, checkpoint if self.global_rank == 0 else None)
        return None

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Load the model and optimizer shards in place; return the rest of the checkpoint.

        Raises:
            S3NotFoundError: if nothing is committed at an ``s3://`` path.
        """
        url = self._s3_url(checkpoint_path)
        if url is None:
            return self._load_locally(checkpoint_path, weights_only=weights_only)
        assert self.model is not None
        assert self.lightning_module is not None
        restore = Restore(
            self.model,
            {self._s3_model_key: self.model},
            self._optimizers_to_restore(),
            strict=self.lightning_module.strict_loading,
        )
        raw = self._load_shards(url, restore)
        return self._lightning_state(raw, url, weights_only)

    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Delete a checkpoint: on ``s3://``, a sharded one's commit first, then all its objects."""
        if is_s3_url(filepath):
            self._remove_from_s3(str(filepath))
        else:
            cast(Any, super()).remove_checkpoint(filepath)

    def _optimizers_to_restore(self) -> dict[str, Optimizer]:
        return {f"optimizer_{index}": optimizer for index, optimizer in enumerate(self.optimizers)}


class S3ModelParallelStrategy(_TrainerShardedCheckpoints, ModelParallelStrategy):
    """``ModelParallelStrategy`` (FSDP2 / tensor parallel) whose sharded checkpoints go to ``s3://``.

    Takes the same arguments as Lightning's. For an ``s3://`` path every rank streams its shards
    through :class:`~s3_checkpoint_io.dcp.S3StorageWriter` (settings from the trainer's
    ``S3CheckpointIO``, if any, else the ``AWS_*`` environment) and one metadata PUT commits the whole
    checkpoint. Runs on CPU with gloo as well as on GPUs.

    Raises:
        ValueError: on saving to ``s3://`` with ``save_distributed_checkpoint=False`` (not supported:
            use the default ``True``).
    """

    _s3_state_dicts = DTENSOR
    _s3_model_key = "state_dict"


class S3FSDPStrategy(_TrainerShardedCheckpoints, FSDPStrategy):
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

    _s3_state_dicts = FSDP1
    _s3_model_key = "model"

    def __init__(self, *, state_dict_type: Literal["full", "sharded"] = "sharded", **kwargs: Any) -> None:
        super().__init__(state_dict_type=state_dict_type, **kwargs)

    @override
    def _optimizers_to_restore(self) -> dict[str, Optimizer]:
        # As Lightning's FSDPStrategy: the optimizer states only when fitting.
        if self.lightning_module.trainer.state.fn != TrainerFn.FITTING:
            return {}
        return super()._optimizers_to_restore()
