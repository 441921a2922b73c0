"""A real Lightning Trainer saving to and resuming from S3 through S3CheckpointIO + S3ModelCheckpoint."""

from __future__ import annotations

import csv
import functools
import pathlib
import pickle
from typing import Any

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy

from checkpoint_io.lit_helpers import TinyModel, assert_same, data, first_run, resume, trainer
from checkpoint_io.s3_helpers import keys
from s3_checkpoint_io import BackgroundSaveError, S3CheckpointIO, S3ModelCheckpoint, SaveStatsLogger

MODES = pytest.mark.parametrize("async_checkpointing", [False, True], ids=["sync", "async"])


@MODES
def test_fit_saves_top_k_and_last_and_removes_the_evicted(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, async_checkpointing: bool
) -> None:
    first_run(bucket, tmp_path, async_checkpointing)
    assert keys(s3_client, bucket) == {"run/step=4.ckpt", "run/step=6.ckpt", "run/last.ckpt"}
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@MODES
@pytest.mark.parametrize("which", ["explicit", "last"])
def test_resume_restores_weights_optimizer_and_step_exactly(
    s3_server: Any,
    bucket: str,
    s3_client: Any,
    tmp_path: pathlib.Path,
    async_checkpointing: bool,
    which: str,
) -> None:
    ended = first_run(bucket, tmp_path, async_checkpointing)
    ckpt_path = f"s3://{bucket}/run/last.ckpt" if which == "explicit" else "last"
    seen = resume(bucket, tmp_path, async_checkpointing, ckpt_path)
    assert seen.state is not None
    assert seen.state["global_step"] == 6
    assert_same(ended["weights"], seen.state["weights"], "weights")
    assert_same(ended["optimizer"], seen.state["optimizer"], "optimizer")
    # the resumed run went on checkpointing: step 8 is in, step 4 was evicted
    assert keys(s3_client, bucket) == {"run/step=6.ckpt", "run/step=8.ckpt", "run/last.ckpt"}


def test_ckpt_path_last_picks_the_highest_step_in_the_name_not_the_newest_object(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    first_run(bucket, tmp_path, False, max_steps=4, last_name="{step}-last")
    assert keys(s3_client, bucket) == {"run/step=2.ckpt", "run/step=4.ckpt", "run/step=4-last.ckpt"}
    # an older step's last checkpoint that happens to be the most recently written object
    source = {"Bucket": bucket, "Key": "run/step=4-last.ckpt"}
    s3_client.copy_object(Bucket=bucket, Key="run/step=2-last.ckpt", CopySource=source)
    seen = resume(bucket, tmp_path, False, "last", max_steps=6, last_name="{step}-last")
    assert seen.ckpt_path == f"s3://{bucket}/run/step=4-last.ckpt"
    assert seen.state is not None
    assert seen.state["global_step"] == 4


def test_ckpt_path_last_with_nothing_saved_trains_from_scratch(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    with pytest.warns(UserWarning, match="no last checkpoint"):
        seen = resume(bucket, tmp_path, True, "last", max_steps=2)
    assert seen.state is not None
    assert seen.state["global_step"] == 0


def test_the_checkpoint_a_run_resumed_from_is_never_deleted(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    first_run(bucket, tmp_path, True)
    # step=4 is in the top 2 it restores, and becomes the one to evict once step 8 is saved
    seen = resume(bucket, tmp_path, True, f"s3://{bucket}/run/step=4.ckpt")
    assert seen.state is not None
    assert seen.state["global_step"] == 4
    remaining = keys(s3_client, bucket)
    assert "run/step=4.ckpt" in remaining
    assert "run/step=8.ckpt" in remaining


def test_nothing_outside_the_callbacks_dirpath_is_deleted(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/a", chunk_size_MB=5)
    callback = {"filename": "{step}", "every_n_train_steps": 2}  # save_top_k=1, no monitor
    fit = trainer(
        plugins=[io],
        callbacks=[S3ModelCheckpoint(f"s3://{bucket}/a", **callback)],
        max_steps=4,
        root=str(tmp_path),
    )
    fit.fit(TinyModel(), data())
    assert keys(s3_client, bucket) == {"a/step=4.ckpt"}
    # a new run in another directory, started from run A's best checkpoint
    io_b = S3CheckpointIO(f"s3://{bucket}/b", chunk_size_MB=5)
    fit_b = trainer(
        plugins=[io_b],
        callbacks=[S3ModelCheckpoint(f"s3://{bucket}/b", **callback)],
        max_steps=8,
        root=str(tmp_path),
    )
    fit_b.fit(TinyModel(), data(), ckpt_path=f"s3://{bucket}/a/step=4.ckpt")
    assert keys(s3_client, bucket) == {"a/step=4.ckpt", "b/step=8.ckpt"}


def test_s3_model_checkpoint_needs_an_s3_dirpath_and_the_plugin(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ValueError, match="ModelCheckpoint for local"):
        S3ModelCheckpoint(dirpath=str(tmp_path))
    with pytest.raises(ValueError, match="link"):
        S3ModelCheckpoint(dirpath=f"s3://{bucket}/run", save_last="link")
    fit = trainer(callbacks=[S3ModelCheckpoint(f"s3://{bucket}/run")], max_steps=1, root=str(tmp_path))
    with pytest.raises(TypeError, match="plugins=\\[S3CheckpointIO"):
        fit.fit(TinyModel(), data())


def test_works_as_the_checkpoint_io_of_a_ddp_strategy_object(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    strategy = DDPStrategy(checkpoint_io=io, process_group_backend="gloo")
    callback = ModelCheckpoint(
        dirpath=f"s3://{bucket}/run", filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    fit = trainer(strategy=strategy, callbacks=[callback], max_steps=4, root=str(tmp_path))
    fit.fit(TinyModel(), data())
    assert keys(s3_client, bucket) == {"run/step=2.ckpt", "run/step=4.ckpt"}


def test_save_stats_reach_the_lightning_logger(s3_server: Any, bucket: str, tmp_path: pathlib.Path) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    logger = CSVLogger(str(tmp_path), name="stats")
    fit = trainer(
        plugins=[io],
        callbacks=[
            S3ModelCheckpoint(f"s3://{bucket}/run", filename="{step}", every_n_train_steps=2, save_top_k=-1),
            SaveStatsLogger(),
        ],
        max_steps=6,
        root=str(tmp_path),
        logger=logger,
        log_every_n_steps=1,
    )
    fit.fit(TinyModel(), data())
    assert [s.path.rsplit("/", 1)[-1] for s in io.save_history] == [
        "step=2.ckpt",
        "step=4.ckpt",
        "step=6.ckpt",
    ]
    with open(pathlib.Path(logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("checkpoint/save_stall_s")]
    assert len(rows) == 3
    for row, stats in zip(rows, io.save_history, strict=True):
        assert float(row["checkpoint/save_bytes"]) == stats.bytes
        assert float(row["checkpoint/save_stall_s"]) == pytest.approx(stats.stall_s)


class FailsToPickleAtStep4(TinyModel):
    """Its step-4 checkpoint holds a local function: the snapshot works, the background torch.save fails."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.global_step == 4:
            checkpoint["callback"] = functools.partial(lambda: None)


def test_a_failed_background_save_stops_fit_at_the_next_save_and_keeps_the_older_checkpoints(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    callback = S3ModelCheckpoint(
        f"s3://{bucket}/run",
        filename="{step}",
        monitor="score",
        mode="max",
        save_top_k=1,
        every_n_train_steps=2,
    )
    fit = trainer(plugins=[io], callbacks=[callback], max_steps=8, root=str(tmp_path))
    with pytest.raises(BackgroundSaveError, match=r"step=4\.ckpt") as caught:
        fit.fit(FailsToPickleAtStep4(), data())
    assert isinstance(caught.value.__cause__, (AttributeError, pickle.PicklingError))
    # the removal of step 2 queued behind the failed save was skipped: the only good checkpoint stays
    assert keys(s3_client, bucket) == {"run/step=2.ckpt"}
    assert io.load_checkpoint(f"s3://{bucket}/run/step=2.ckpt")["global_step"] == 2
