"""The private Lightning interfaces S3ModelCheckpoint overrides: checked in one place, patched briefly."""

from __future__ import annotations

import pathlib

import lightning
import pytest
from lightning.fabric.utilities import cloud_io
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from lightning.pytorch.trainer.connectors import checkpoint_connector

from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, data, topk_callback, trainer
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from s3_checkpoint_io.lightning.lightning_internals import (
    TESTED_LIGHTNING_VERSIONS,
    LightningInternalsError,
    strategy_loads_on_every_rank,
)
from s3_checkpoint_io.strategies import S3FSDPStrategy
from support.s3_server import MotoServer

pytestmark = pytest.mark.timeout(300)


def test_the_installed_lightning_is_one_the_overrides_are_tested_on() -> None:
    assert lightning.__version__ in TESTED_LIGHTNING_VERSIONS


def test_a_lightning_without_a_hook_fails_at_construction_naming_the_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(ModelCheckpoint, "_save_checkpoint")
    with pytest.raises(LightningInternalsError) as missing:
        S3ModelCheckpoint("s3://bucket/run")
    message = str(missing.value)
    assert f"Lightning {lightning.__version__} differs" in message
    assert "2.4.0, 2.6.6" in message
    assert "ModelCheckpoint._save_checkpoint('self', 'trainer', 'filepath')" in message


def test_a_lightning_with_a_public_name_of_ours_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ModelCheckpoint, "record_save", lambda self: None, raising=False)
    with pytest.raises(
        LightningInternalsError, match=r"ModelCheckpoint\.record_save \(now Lightning's own\)"
    ):
        S3ModelCheckpoint("s3://bucket/run")


def test_the_connector_keeps_lightnings_get_filesystem_except_while_it_probes_the_last_checkpoint(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    S3ModelCheckpoint(dirpath)
    assert checkpoint_connector.get_filesystem is cloud_io.get_filesystem  # no process-wide patch

    for max_steps, ckpt_path, started_at in ((2, None, 0), (4, "last", 2)):
        seen = CaptureAtTrainStart()
        fit = trainer(
            plugins=[S3CheckpointIO(dirpath, endpoint_url=s3_server.endpoint_url)],
            callbacks=[topk_callback(dirpath), seen],
            max_steps=max_steps,
            root=str(tmp_path),
        )
        fit.fit(TinyModel(), data(), ckpt_path=ckpt_path)
        assert seen.state is not None
        assert seen.state["global_step"] == started_at
        assert checkpoint_connector.get_filesystem is cloud_io.get_filesystem


def test_a_lightning_whose_resume_start_differs_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint_connector._CheckpointConnector, "resume_start", lambda self, path: None)
    with pytest.raises(
        LightningInternalsError, match=r"_CheckpointConnector.resume_start\('self', 'checkpoint_path'\)"
    ):
        S3ModelCheckpoint("s3://bucket/run")


def test_only_a_strategy_with_lightnings_own_load_has_its_resume_made_collective() -> None:
    assert strategy_loads_on_every_rank(DDPStrategy())
    assert strategy_loads_on_every_rank(SingleDeviceStrategy("cpu"))
    assert not strategy_loads_on_every_rank(FSDPStrategy())
    assert not strategy_loads_on_every_rank(S3FSDPStrategy())
