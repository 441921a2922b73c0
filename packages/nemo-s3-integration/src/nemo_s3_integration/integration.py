"""The one entry point, ``s3_exp_manager(trainer, cfg)``, used in place of NeMo's ``exp_manager``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from nemo_s3_integration.config import S3CheckpointingConfig
from nemo_s3_integration.connector import S3ResumeConnector
from nemo_s3_integration.model_checkpoint import S3NeMoModelCheckpoint
from nemo_s3_integration.resume import rank_zero_check_resume
from s3_checkpoint_io import S3CheckpointIO
from s3_dirpath_utils import require_s3_url

logger = logging.getLogger(__name__)

_DIRPATH_KEY = "exp_manager.checkpoint_callback_params.dirpath"
_PATCH_LOCK = threading.Lock()


def s3_exp_manager(
    trainer: Trainer,
    cfg: Mapping[str, Any],
    *,
    tensor_parallel: int | None = None,
    pipeline_parallel: int | None = None,
) -> Path | None:
    """Set a Trainer up to checkpoint to S3, then run NeMo's ``exp_manager`` on it.

    Use it where a NeMo script calls ``exp_manager(trainer, cfg.exp_manager)``. It:

    1. validates ``cfg.s3_checkpointing`` and ``cfg.exp_manager.checkpoint_callback_params.dirpath``
       (an ``s3://`` URL), and warns when the concurrency can exceed S3's per-prefix request rate;
    2. builds an :class:`~s3_checkpoint_io.S3CheckpointIO` from them and hands it to the Trainer's
       strategy (Lightning's ``DDPStrategy`` or a single-device strategy);
    3. installs :class:`~nemo_s3_integration.connector.S3ResumeConnector`, so every rank loads the
       checkpoint that global rank 0 chose;
    4. runs ``nemo.utils.exp_manager.exp_manager(trainer, cfg.exp_manager)`` with two S3-aware parts in
       place of NeMo's: resume discovery lists S3 once, on global rank 0 only, and the ModelCheckpoint it
       creates is :class:`~nemo_s3_integration.model_checkpoint.S3NeMoModelCheckpoint`.

    Args:
        trainer: a Lightning Trainer built with ``logger=False`` and ``enable_checkpointing=False``, as NeMo's
            exp_manager requires.
        cfg: the whole config (a ``dict`` or OmegaConf ``DictConfig``) with ``exp_manager`` and
            ``s3_checkpointing`` sections; ``model.tensor_model_parallel_size`` and
            ``model.pipeline_model_parallel_size`` are read for the request-rate check when present.
        tensor_parallel: tensor-parallel size for the request-rate check, overriding the config.
        pipeline_parallel: pipeline-parallel size for the request-rate check, overriding the config.

    Returns:
        The log directory exp_manager returns (None when exp_manager is disabled, as in NeMo).

    Raises:
        ValueError: if a section or key is missing or invalid; the message names the key.
        TypeError: if the Trainer's strategy cannot take a CheckpointIO that saves whole checkpoints.
    """
    exp_cfg = _section(cfg, "exp_manager")
    s3_cfg = S3CheckpointingConfig.from_section(_optional_section(cfg, "s3_checkpointing"))
    dirpath = _checkpoint_dirpath(exp_cfg)
    s3_cfg.warn_if_over_request_budget(
        tensor_parallel if tensor_parallel is not None else _model_size(cfg, "tensor_model_parallel_size"),
        pipeline_parallel
        if pipeline_parallel is not None
        else _model_size(cfg, "pipeline_model_parallel_size"),
    )
    _install(trainer, dirpath, s3_cfg)
    with _s3_aware_nemo() as exp_manager:
        log_dir: Path | None = exp_manager(trainer, exp_cfg)
    return log_dir


def _install(trainer: Trainer, dirpath: str, s3_cfg: S3CheckpointingConfig) -> None:
    strategy = trainer.strategy
    if not isinstance(strategy, (DDPStrategy, SingleDeviceStrategy)):
        raise TypeError(
            f"S3 checkpointing supports Lightning's DDPStrategy and single-device strategies, got "
            f"{type(strategy).__name__}; build the Trainer with strategy='ddp' (or a DDPStrategy)"
        )
    if strategy._checkpoint_io is not None and not isinstance(strategy._checkpoint_io, S3CheckpointIO):
        logger.warning(
            "replacing the Trainer's %s with S3CheckpointIO for %s",
            type(strategy._checkpoint_io).__name__,
            dirpath,
        )
    strategy.checkpoint_io = S3CheckpointIO(
        dirpath,
        chunk_size_MB=s3_cfg.chunk_size_MB,
        max_read_concurrency=s3_cfg.max_read_concurrency,
        max_write_concurrency=s3_cfg.max_write_concurrency,
        async_checkpointing=s3_cfg.enable_async_checkpointing,
    )
    if not isinstance(trainer._checkpoint_connector, S3ResumeConnector):
        trainer._checkpoint_connector = S3ResumeConnector(trainer)
    logger.info(
        "S3 checkpointing to %s (chunk %d MiB, %d writes / %d reads in flight, async=%s)",
        dirpath,
        s3_cfg.chunk_size_MB,
        s3_cfg.max_write_concurrency,
        s3_cfg.max_read_concurrency,
        s3_cfg.enable_async_checkpointing,
    )


@contextlib.contextmanager
def _s3_aware_nemo() -> Iterator[Any]:
    # exp_manager looks both names up in its own module at call time, so swapping them for the duration
    # of the call is the one way to change how it discovers resumes and builds its ModelCheckpoint
    # without copying exp_manager. The originals come back afterwards; the lock keeps two threads from
    # interleaving the swap.
    import nemo.utils.exp_manager as nemo_exp_manager

    with _PATCH_LOCK:
        saved = (nemo_exp_manager.check_resume, nemo_exp_manager.NeMoModelCheckpoint)
        nemo_exp_manager.check_resume = rank_zero_check_resume(saved[0])
        nemo_exp_manager.NeMoModelCheckpoint = S3NeMoModelCheckpoint
        try:
            yield nemo_exp_manager.exp_manager
        finally:
            nemo_exp_manager.check_resume, nemo_exp_manager.NeMoModelCheckpoint = saved


def _optional_section(cfg: Mapping[str, Any], name: str) -> Any:
    if not isinstance(cfg, Mapping):
        raise ValueError(f"the config must be a mapping (dict or DictConfig), got {type(cfg).__name__}")
    return cfg.get(name)


def _section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = _optional_section(cfg, name)
    if section is None:
        raise ValueError(f"the config has no '{name}' section; NeMo's exp_manager needs one")
    if not isinstance(section, Mapping):
        raise ValueError(f"'{name}' must be a mapping, got {type(section).__name__}")
    return section


def _checkpoint_dirpath(exp_cfg: Mapping[str, Any]) -> str:
    params = exp_cfg.get("checkpoint_callback_params")
    dirpath = params.get("dirpath") if isinstance(params, Mapping) else None
    if not dirpath:
        raise ValueError(f"{_DIRPATH_KEY} is not set; set it to the s3://bucket/prefix to checkpoint into")
    return require_s3_url(
        str(dirpath), _DIRPATH_KEY, "for local checkpoints call NeMo's exp_manager directly"
    )


def _model_size(cfg: Mapping[str, Any], key: str) -> int:
    model = cfg.get("model")
    value = model.get(key) if isinstance(model, Mapping) else None
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{key} must be a positive integer, got {value!r}")
    return value
