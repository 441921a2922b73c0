"""The s3_checkpointing section and the entry point reject bad config fast, naming the key."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from nemo_app import SEED_YAML, config, trainer
from omegaconf import OmegaConf

from nemo_s3_integration import S3CheckpointingConfig, S3RequestRateWarning, s3_exp_manager
from nemo_s3_integration.connector import S3ResumeConnector
from s3_checkpoint_io import S3CheckpointIO


def _section(**changes: Any) -> dict[str, Any]:
    section = dict(OmegaConf.to_container(OmegaConf.create(SEED_YAML).s3_checkpointing))  # type: ignore[arg-type]
    section.update(changes)
    return section


def test_seed_section_gives_the_documented_values() -> None:
    cfg = S3CheckpointingConfig.from_section(OmegaConf.create(SEED_YAML).s3_checkpointing)
    assert cfg == S3CheckpointingConfig(
        max_write_concurrency=10, max_read_concurrency=15, chunk_size_MB=64, enable_async_checkpointing=False
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (None, "no 's3_checkpointing' section"),
        ("fast", "must be a mapping"),
        (_section(max_write_concurency=4), "'max_write_concurency' (did you mean 'max_write_concurrency'?)"),
        ({k: v for k, v in _section().items() if k != "chunk_size_MB"}, "missing the key(s) chunk_size_MB"),
        (_section(max_read_concurrency=0), "s3_checkpointing.max_read_concurrency must be 1 to 1024, got 0"),
        (_section(max_write_concurrency="10"), "s3_checkpointing.max_write_concurrency must be an integer"),
        (_section(max_write_concurrency=True), "s3_checkpointing.max_write_concurrency must be an integer"),
        (_section(chunk_size_MB=4), "s3_checkpointing.chunk_size_MB must be 5 to 5120, got 4"),
        (_section(chunk_size_MB=8.5), "s3_checkpointing.chunk_size_MB must be an integer"),
        (_section(enable_async_checkpointing="yes"), "enable_async_checkpointing must be True or False"),
    ],
)
def test_bad_section_is_rejected_with_the_key_named(section: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        S3CheckpointingConfig.from_section(section)


def test_config_is_frozen() -> None:
    cfg = S3CheckpointingConfig()
    with pytest.raises(AttributeError):
        cfg.chunk_size_MB = 8  # type: ignore[misc]


def test_request_rate_within_budget_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            S3CheckpointingConfig().warn_if_over_request_budget(tensor_parallel=8, pipeline_parallel=4) == []
        )


def test_request_rate_over_budget_warns_with_the_math_and_a_safe_value() -> None:
    # 10 x 8 x 40 x 1.15 = 3680 PUT/s > 3500; 15 x 8 x 40 x 1.15 = 5520 GET/s > 5500
    with pytest.warns(S3RequestRateWarning) as caught:
        S3CheckpointingConfig().warn_if_over_request_budget(tensor_parallel=8, pipeline_parallel=40)
    messages = [str(w.message) for w in caught]
    assert any("max_write_concurrency=10" in m and "3680 PUT/s" in m and "<= 9" in m for m in messages)
    assert any("max_read_concurrency=15" in m and "5520 GET/s" in m and "<= 14" in m for m in messages)


def test_entry_point_warns_from_the_model_parallel_sizes_and_installs_s3_checkpoint_io(
    tmp_path: Path,
) -> None:
    cfg = config(str(tmp_path / "logs"))
    cfg.exp_manager.resume_if_exists = False  # nothing to discover: no S3 request is needed
    cfg.model = {"tensor_model_parallel_size": 8, "pipeline_model_parallel_size": 40}
    fit_trainer = trainer(1, 1, [])
    with pytest.warns(S3RequestRateWarning, match="tp=8 x pp=40"):
        log_dir = s3_exp_manager(fit_trainer, cfg)
    assert log_dir == tmp_path / "logs"
    assert isinstance(fit_trainer.strategy.checkpoint_io, S3CheckpointIO)
    assert fit_trainer.strategy.checkpoint_io.dirpath == "s3://bucket/run/checkpoints"
    assert isinstance(fit_trainer._checkpoint_connector, S3ResumeConnector)
    assert [type(c).__name__ for c in fit_trainer.callbacks if "Checkpoint" in type(c).__name__] == [
        "S3NeMoModelCheckpoint"
    ]


@pytest.mark.parametrize(
    ("dirpath", "message"),
    [
        (None, "exp_manager.checkpoint_callback_params.dirpath is not set"),
        ("/tmp/checkpoints", "must be an s3://bucket/key URL"),
        ("s3://Bad_Bucket/run", "exp_manager.checkpoint_callback_params.dirpath: S3 URL"),
    ],
)
def test_entry_point_rejects_a_missing_or_wrong_dirpath_before_touching_anything(
    dirpath: str | None, message: str, tmp_path: Path
) -> None:
    cfg = config(str(tmp_path / "logs"))
    cfg.exp_manager.checkpoint_callback_params.dirpath = dirpath
    fit_trainer = trainer(1, 1, [])
    started = time.monotonic()
    with pytest.raises(ValueError, match=re.escape(message)):
        s3_exp_manager(fit_trainer, cfg)
    assert time.monotonic() - started < 5
    assert type(fit_trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO"  # nothing installed
    assert not (tmp_path / "logs").exists()


def test_entry_point_names_a_missing_section(tmp_path: Path) -> None:
    cfg = config(str(tmp_path / "logs"))
    del cfg["s3_checkpointing"]
    with pytest.raises(ValueError, match="no 's3_checkpointing' section"):
        s3_exp_manager(trainer(1, 1, []), cfg)
    with pytest.raises(ValueError, match="no 'exp_manager' section"):
        s3_exp_manager(trainer(1, 1, []), OmegaConf.create({"s3_checkpointing": _section()}))


def test_entry_point_rejects_a_bad_model_parallel_size(tmp_path: Path) -> None:
    cfg = config(str(tmp_path / "logs"))
    cfg.model = {"tensor_model_parallel_size": 0}
    with pytest.raises(ValueError, match=r"model\.tensor_model_parallel_size must be a positive integer"):
        s3_exp_manager(trainer(1, 1, []), cfg)
