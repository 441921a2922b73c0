"""The seed YAML, loaded with OmegaConf, drives a real exp_manager and Trainer.fit, saves to S3, resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nemo_app import config, train

from support.s3_objects import object_keys

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
def test_seed_yaml_trains_to_s3_and_resumes_from_the_last_checkpoint(
    enable_async: bool, seed_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = train(config(str(tmp_path / "logs"), enable_async=enable_async), devices=1, max_steps=4)

    assert (first["start_step"], first["end_step"]) == (0, 4)
    keys = object_keys(s3_client, seed_bucket, "run/checkpoints/")
    assert "run/checkpoints/run--step=4-last.ckpt" in keys
    assert "run/checkpoints/run--step=4.ckpt" in keys
    assert "run/checkpoints/run--step=2-last.ckpt" not in keys  # the previous -last was replaced

    second = train(config(str(tmp_path / "logs"), enable_async=enable_async), devices=1, max_steps=8)

    assert second["ckpt_path"] == "s3://bucket/run/checkpoints/run--step=4-last.ckpt"
    assert (second["start_step"], second["end_step"]) == (4, 8)
    keys = object_keys(s3_client, seed_bucket, "run/checkpoints/")
    assert "run/checkpoints/run--step=8-last.ckpt" in keys
    assert "run/checkpoints/run--step=4-last.ckpt" in keys  # what training resumed from is kept
    # NeMo 3.0.0 alone would create its unfinished-checkpoint markers under a local "s3:" folder.
    assert not (tmp_path / "s3:").exists()


def test_a_checkpoint_of_several_parts_saves_and_loads_through_nemo(
    seed_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config(str(tmp_path / "logs"))
    cfg.s3_checkpointing.chunk_size_MB = 5  # S3's smallest part: a 12 MB checkpoint takes 3 parts
    first = train(cfg, devices=1, max_steps=2, extra_floats=3_000_000)
    head = s3_client.head_object(Bucket=seed_bucket, Key="run/checkpoints/run--step=2-last.ckpt")
    assert head["ContentLength"] > 2 * 5 * 1024 * 1024

    second = train(cfg, devices=1, max_steps=4, extra_floats=3_000_000)

    assert second["ckpt_path"] == "s3://bucket/run/checkpoints/run--step=2-last.ckpt"
    assert (second["start_step"], second["bulk_sum"]) == (2, first["bulk_sum"])


def test_a_finished_run_is_refused_on_resume_and_nemo_is_left_as_it_was(
    seed_bucket: str, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nemo.utils.exp_manager as nemo_exp_manager

    originals = (nemo_exp_manager.check_resume, nemo_exp_manager.NeMoModelCheckpoint)
    s3_client.put_object(Bucket=seed_bucket, Key="run/checkpoints/run--step=9-end.ckpt", Body=b"x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"run--step=9-end\.ckpt: the run in .* already finished"):
        train(config(str(tmp_path / "logs")), devices=1, max_steps=10)
    assert (nemo_exp_manager.check_resume, nemo_exp_manager.NeMoModelCheckpoint) == originals
