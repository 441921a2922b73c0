"""Every private Lightning interface this package uses, in one place, with the versions it is tested on.

Lightning has no public hook for what :class:`~s3_checkpoint_io.lightning.S3ModelCheckpoint` changes:
which checkpoints ``ckpt_path="last"`` considers, how a top-k or last checkpoint is saved, and which
previous checkpoint may be deleted. ``ModelCheckpoint`` does these in private methods, and the
checkpoint connector probes the ``"last"`` candidates through its module's ``get_filesystem``. This
module is the only one that touches them:

- :class:`ModelCheckpointHooks` overrides the five private ``ModelCheckpoint`` hooks and hands each
  to a method of this package's own whose default is Lightning's (``save_topk_checkpoint``,
  ``save_last_checkpoint``, ``save_checkpoint_at``, ``find_last_checkpoints``, ``may_remove_previous``);
  it also reads and writes the two private attributes a save records
  (:attr:`~ModelCheckpointHooks.last_saved`, :meth:`~ModelCheckpointHooks.record_save`).
- :func:`answer_probes_for` replaces the connector's ``get_filesystem`` only from the moment
  ``find_last_checkpoints`` returns its pick until the connector has probed it (or the callback's
  ``setup`` runs, whichever is first), never for the whole process.
- :func:`load_on_every_rank_during_resume` wraps the trainer's checkpoint connector's
  ``resume_start`` (on that connector object, for one call): Lightning calls it on every rank at once,
  so the single-file load inside it may be a collective (:meth:`S3CheckpointIO.every_rank_loads`).
- The sharded strategies (:mod:`s3_checkpoint_io.strategies`) ask Lightning's strategy modules the
  same questions Lightning's own ``save_checkpoint`` / ``load_checkpoint`` ask, through the functions
  at the end of this module (each imports its Lightning module when first called, so importing this
  one loads no strategy module).

:func:`require_lightning_internals` checks all of them against the installed Lightning when an
``S3ModelCheckpoint`` is created, so an upgrade that renames one fails there, naming the version,
instead of silently skipping an override.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any
from weakref import proxy

import lightning
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.trainer.connectors import checkpoint_connector
from torch import Tensor

from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.lightning.last_checkpoint import ListedCheckpoint, ListedFileSystem

TESTED_LIGHTNING_VERSIONS = ("2.4.0", "2.6.6")
"""The Lightning versions the test suite runs these overrides on."""

_HOOK_PARAMETERS = {
    "_save_topk_checkpoint": ("self", "trainer", "monitor_candidates"),
    "_save_last_checkpoint": ("self", "trainer", "monitor_candidates"),
    "_save_checkpoint": ("self", "trainer", "filepath"),
    "_find_last_checkpoints": ("self", "trainer"),
    "_should_remove_checkpoint": ("self", "trainer", "previous", "current"),
}
_SAVE_RECORD = ("_last_checkpoint_saved", "_last_global_step_saved")
_RESUME_START_PARAMETERS = ("self", "checkpoint_path")
"""``_CheckpointConnector.resume_start``'s first parameters (2.5 adds ``weights_only`` after them)."""
_OUR_NAMES = (
    "save_topk_checkpoint",
    "save_last_checkpoint",
    "save_checkpoint_at",
    "find_last_checkpoints",
    "may_remove_previous",
    "last_saved",
    "record_save",
)


class LightningInternalsError(RuntimeError):
    """The installed Lightning lacks a private interface this package overrides (an untested version)."""


def require_lightning_internals(callback: ModelCheckpoint) -> None:
    """Check that Lightning still has every private interface this module uses, and none of its names.

    Args:
        callback: a constructed ``ModelCheckpoint`` (its save record is an instance attribute).

    Raises:
        LightningInternalsError: naming the installed and the tested Lightning versions and what differs.
    """
    missing = [
        f"ModelCheckpoint.{name}{expected}"
        for name, expected in _HOOK_PARAMETERS.items()
        if _parameters(getattr(ModelCheckpoint, name, None)) != expected
    ]
    missing += [f"ModelCheckpoint().{name}" for name in _SAVE_RECORD if not hasattr(callback, name)]
    if not callable(getattr(checkpoint_connector, "get_filesystem", None)):
        missing.append("lightning.pytorch.trainer.connectors.checkpoint_connector.get_filesystem")
    resume_start = getattr(checkpoint_connector._CheckpointConnector, "resume_start", None)
    if (_parameters(resume_start) or ())[:2] != _RESUME_START_PARAMETERS:
        missing.append(f"_CheckpointConnector.resume_start{_RESUME_START_PARAMETERS}")
    taken = [
        f"ModelCheckpoint.{name} (now Lightning's own)"
        for name in _OUR_NAMES
        if hasattr(ModelCheckpoint, name)
    ]
    if missing or taken:
        raise LightningInternalsError(
            f"S3ModelCheckpoint relies on private Lightning interfaces as they are in Lightning "
            f"{', '.join(TESTED_LIGHTNING_VERSIONS)}, and Lightning {lightning.__version__} differs: "
            f"{', '.join(missing + taken)}. Install a tested Lightning version or update "
            "s3_checkpoint_io.lightning.lightning_internals"
        )


def _parameters(function: Any) -> tuple[str, ...] | None:
    return None if function is None else tuple(inspect.signature(function).parameters)


class ModelCheckpointHooks(ModelCheckpoint):
    """``ModelCheckpoint`` whose private hooks call this package's methods, Lightning's by default.

    Args:
        **kwargs: ``ModelCheckpoint``'s arguments.

    Raises:
        LightningInternalsError: if the installed Lightning lacks one of the hooks.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        require_lightning_internals(self)

    @override
    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self.save_topk_checkpoint(trainer, monitor_candidates)

    @override
    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        self.save_last_checkpoint(trainer, monitor_candidates)

    @override
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self.save_checkpoint_at(trainer, filepath)

    @override
    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        return self.find_last_checkpoints(trainer)

    @override
    def _should_remove_checkpoint(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        return self.may_remove_previous(trainer, previous, current)

    def save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        """Save a top-k checkpoint if this step's metrics earn one (Lightning's ``_save_topk_checkpoint``)."""
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        """Save the last checkpoint (Lightning's ``_save_last_checkpoint``)."""
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def save_checkpoint_at(self, trainer: pl.Trainer, filepath: str) -> None:
        """Save the trainer's state at ``filepath`` and record it (Lightning's ``_save_checkpoint``)."""
        super()._save_checkpoint(trainer, filepath)

    def find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        """The candidates for ``ckpt_path="last"`` (Lightning's ``_find_last_checkpoints``)."""
        found: set[str] = super()._find_last_checkpoints(trainer)
        return found

    def may_remove_previous(self, trainer: pl.Trainer, previous: str, current: str) -> bool:
        """Whether ``previous`` may go now that ``current`` is saved (``_should_remove_checkpoint``)."""
        return bool(super()._should_remove_checkpoint(trainer, previous, current))

    @property
    def last_saved(self) -> tuple[str, int]:
        """The checkpoint this callback saved last and the global step it saved it at ("" and 0: none)."""
        return self._last_checkpoint_saved, self._last_global_step_saved

    def record_save(self, trainer: pl.Trainer, filepath: str) -> None:
        """What Lightning's ``_save_checkpoint`` does once ``filepath`` holds this step's state: record it
        and tell the loggers (on global rank 0)."""
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


class _ConnectorProbes:
    """The checkpoint connector's ``get_filesystem`` while it probes :class:`ListedCheckpoint` objects.

    Answers for them from what the listing found (``ListedFileSystem``), passes every other path to
    Lightning's function, and puts Lightning's function back once each pending pick has been probed.
    """

    def __init__(self, lightning_get_filesystem: Any) -> None:
        self.lightning_get_filesystem = lightning_get_filesystem
        self.pending: list[ListedCheckpoint] = []

    def __call__(self, path: Any, **kwargs: Any) -> Any:
        if not isinstance(path, ListedCheckpoint):
            return self.lightning_get_filesystem(path, **kwargs)
        self.pending = [listed for listed in self.pending if listed is not path]
        if not self.pending:
            stop_answering_probes()
        return ListedFileSystem()


def answer_probes_for(listed: ListedCheckpoint) -> None:
    """Make the checkpoint connector take ``listed`` as found, until it has probed it.

    Lightning 2.4 to 2.6 resolve ``ckpt_path="last"`` in ``_CheckpointConnector._parse_ckpt_path``: right
    after asking every ``ModelCheckpoint`` for candidates, they call the module's
    ``get_filesystem(path)`` on each and then ``.exists(path)`` / ``.modified(path)``.
    """
    current = checkpoint_connector.get_filesystem  # type: ignore[attr-defined]
    if not isinstance(current, _ConnectorProbes):
        current = _ConnectorProbes(current)
        checkpoint_connector.get_filesystem = current  # type: ignore[attr-defined]
    current.pending.append(listed)


def stop_answering_probes() -> None:
    """Give the checkpoint connector Lightning's ``get_filesystem`` back (nothing to do if it has it)."""
    current = checkpoint_connector.get_filesystem  # type: ignore[attr-defined]
    if isinstance(current, _ConnectorProbes):
        checkpoint_connector.get_filesystem = current.lightning_get_filesystem  # type: ignore[attr-defined]


def strategy_loads_on_every_rank(strategy: Strategy) -> bool:
    """Whether ``strategy.load_checkpoint`` is Lightning's own: its ``checkpoint_io``'s, on every rank.

    DDP's is; a strategy that overrides it (FSDP, DeepSpeed, the sharded strategies) may load
    otherwise, so its load is never made a collective.
    """
    return type(strategy).load_checkpoint is Strategy.load_checkpoint


class _ResumeOnEveryRank:
    """A connector's ``resume_start`` for one call, run inside ``every_rank_loads()``.

    The first call puts back what the connector had (Lightning's method, or an earlier wrapper).
    """

    def __init__(
        self, connector: Any, every_rank_loads: Callable[[], contextlib.AbstractContextManager[None]]
    ) -> None:
        self.connector = connector
        self.every_rank_loads = every_rank_loads
        self.previous = connector.__dict__.get("resume_start")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.connector.__dict__.get("resume_start") is self:
            if self.previous is None:
                del self.connector.resume_start
            else:
                self.connector.resume_start = self.previous
        with self.every_rank_loads():
            return self.connector.resume_start(*args, **kwargs)


def load_on_every_rank_during_resume(
    trainer: pl.Trainer, every_rank_loads: Callable[[], contextlib.AbstractContextManager[None]]
) -> bool:
    """Run the trainer's next ``resume_start`` inside ``every_rank_loads()``, if its loads are collective.

    Lightning 2.4 to 2.6 call ``trainer._checkpoint_connector.resume_start(path, ...)`` on every rank,
    after the callbacks' ``setup`` and before training; it loads through ``strategy.load_checkpoint``.
    Only that one call of that connector object is wrapped, and only when the strategy's load is
    Lightning's own (:func:`strategy_loads_on_every_rank`).

    Returns:
        Whether the resume was armed.
    """
    if not strategy_loads_on_every_rank(trainer.strategy):
        return False
    connector: Any = trainer._checkpoint_connector
    connector.resume_start = _ResumeOnEveryRank(connector, every_rank_loads)
    return True


def has_dtensor_modules(module: object) -> bool:
    """Lightning's test for a module holding DTensor parameters (``ModelParallelStrategy``)."""
    from lightning.fabric.strategies.model_parallel import _has_dtensor_modules

    return bool(_has_dtensor_modules(module))


def has_fsdp_modules(module: object) -> bool:
    """Lightning's test for a module holding FSDP1-wrapped modules (``FSDPStrategy``)."""
    from lightning.fabric.strategies.fsdp import _has_fsdp_modules

    return bool(_has_fsdp_modules(module))


def fsdp_sharded_state_dict_context(module: Any) -> Any:
    """Lightning's FSDP1 sharded state-dict context (``SHARDED_STATE_DICT``, offloaded to CPU)."""
    from lightning.fabric.strategies.fsdp import _get_sharded_state_dict_context

    return _get_sharded_state_dict_context(module)


def validate_keys_for_strict_loading(requested: Any, loaded: Any, strict: bool) -> None:
    """Lightning's check that a Fabric load restores every key asked for (and only those, if strict)."""
    from lightning.fabric.strategies.strategy import _validate_keys_for_strict_loading

    _validate_keys_for_strict_loading(requested, loaded, strict=strict)


def saves_distributed_checkpoint(strategy: Any) -> bool:
    """A ``ModelParallelStrategy``'s ``save_distributed_checkpoint`` argument."""
    return bool(strategy._save_distributed_checkpoint)


def fsdp_state_dict_type(strategy: Any) -> str:
    """An ``FSDPStrategy``'s ``state_dict_type`` argument (``"full"`` or ``"sharded"``)."""
    return str(strategy._state_dict_type)
