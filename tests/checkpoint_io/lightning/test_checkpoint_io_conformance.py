"""S3CheckpointIO behaves as Lightning's ``CheckpointIO`` contract (and ``TorchCheckpointIO``) does.

Against the real S3 server, and a real two-process ``Trainer.fit`` where the contract involves one.
"""

from __future__ import annotations

import pathlib
import pickle
from typing import Any

import pytest
import torch

from checkpoint_io.lit_helpers import TinyModel, assert_same, data, trainer
from checkpoint_io.s3_helpers import keys, state
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from s3_utils import S3ClientConfig, S3NotFoundError

MODES = pytest.mark.parametrize(
    "mode",
    [
        {"async_checkpointing": False},
        {"async_checkpointing": True, "async_uploader": "thread"},
        {"async_checkpointing": True, "async_uploader": "process"},
    ],
    ids=["sync", "async-thread", "async-process"],
)


# -- pickling, and ddp_spawn ----------------------------------------------------------------------------


def test_a_pickled_copy_keeps_the_settings_and_starts_fresh(s3_server: Any, bucket: str) -> None:
    config = S3ClientConfig(
        endpoint_url=s3_server.endpoint_url,
        region="us-east-1",
        access_key_id="testing-access-key",
        secret_access_key="testing-secret-key-never-logged",
        read_timeout=7.0,
    )
    io = S3CheckpointIO(
        f"s3://{bucket}/run",
        chunk_size_MB=6,
        max_read_concurrency=3,
        max_write_concurrency=2,
        async_checkpointing=True,
        client_config=config,
        async_uploader="thread",
        max_pending_saves=2,
        history_size=5,
    )
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves()  # the original now holds clients, a worker thread and a history

        copy = pickle.loads(pickle.dumps(io))
        try:
            assert copy.dirpath == io.dirpath
            assert copy.settings == io.settings
            assert copy.client_config == config
            assert copy._write_transfer == io._write_transfer
            assert copy._read_transfer == io._read_transfer
            assert copy.save_history == ()
            assert copy.pending_saves == []
            assert "testing-secret-key-never-logged" not in repr(copy)

            copy.save_checkpoint(state(2), f"s3://{bucket}/run/b.ckpt")
            copy.wait_for_saves()
            assert copy.load_checkpoint(f"s3://{bucket}/run/a.ckpt")["global_step"] == 1
            assert [s.sequence for s in copy.save_history] == [1]
            assert [s.path.rsplit("/", 1)[-1] for s in io.save_history] == ["a.ckpt"]  # its own
        finally:
            copy.teardown()
    finally:
        io.teardown()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("async_checkpointing", [False, True], ids=["sync", "async"])
def test_ddp_spawn_fit_saves_to_s3_and_hands_the_final_weights_back(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, async_checkpointing: bool
) -> None:
    # Each spawned rank unpickles the plugin; the AWS_* variables of the s3_server fixture reach them
    # through the environment they inherit.
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=async_checkpointing)
    callback = S3ModelCheckpoint(
        f"s3://{bucket}/run", filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    model = TinyModel()
    fit = trainer(
        plugins=[io],
        callbacks=[callback],
        max_steps=2,
        max_epochs=1,
        root=str(tmp_path),
        strategy="ddp_spawn",
        devices=2,
    )
    fit.fit(model, data())  # 4 batches over 2 ranks: 2 steps, one checkpoint

    assert keys(s3_client, bucket) == {"run/step=2.ckpt"}
    checkpoint = io.load_checkpoint(f"s3://{bucket}/run/step=2.ckpt")
    assert checkpoint["global_step"] == 2
    # ddp_spawn handed the trained weights back to this process through the plugin's local hand-off
    assert_same(model.state_dict(), checkpoint["state_dict"], "state_dict")
    io.teardown()


def test_any_other_local_path_is_still_refused(s3_server: Any, bucket: str, tmp_path: pathlib.Path) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run")
    with pytest.raises(ValueError, match="TorchCheckpointIO"):
        io.save_checkpoint(state(), tmp_path / ".temp.ckpt")  # not in a folder of its own under /tmp
    with pytest.raises(ValueError, match="TorchCheckpointIO"):
        io.load_checkpoint(str(tmp_path / "a.ckpt"))


# -- exists ---------------------------------------------------------------------------------------------


def test_exists_is_false_only_for_a_missing_object_and_raises_for_a_missing_bucket(
    s3_server: Any, bucket: str
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    try:
        assert io.exists(f"s3://{bucket}/run/a.ckpt") is False
        io.save_checkpoint(state(), f"s3://{bucket}/run/a.ckpt")
        assert io.exists(f"s3://{bucket}/run/a.ckpt") is True

        missing = f"missing-{bucket}"
        with pytest.raises(
            S3NotFoundError, match=f"bucket '{missing}' does not exist.*check the bucket"
        ) as caught:
            S3CheckpointIO(f"s3://{missing}/run").exists(f"s3://{missing}/run/a.ckpt")
        assert caught.value.code == "NoSuchBucket"
        assert caught.value.bucket == missing
    finally:
        io.teardown()


def test_load_from_a_missing_bucket_names_the_bucket_not_a_missing_checkpoint(
    s3_server: Any, bucket: str
) -> None:
    missing = f"missing-{bucket}"
    io = S3CheckpointIO(f"s3://{missing}/run")
    with pytest.raises(S3NotFoundError, match=f"bucket '{missing}' does not exist"):
        io.load_checkpoint(f"s3://{missing}/run/a.ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        S3CheckpointIO(f"s3://{bucket}/run").load_checkpoint(f"s3://{bucket}/run/a.ckpt")


# -- load gives back what was saved ---------------------------------------------------------------------


@MODES
@pytest.mark.parametrize(
    "saved",
    [
        torch.arange(12.0).reshape(3, 4),
        [torch.ones(3), 2, "three"],
        {"weights": torch.zeros(2, 2), "note": "not a Lightning checkpoint"},
    ],
    ids=["tensor", "list", "plain-dict"],
)
def test_load_gives_back_whatever_was_saved(
    s3_server: Any, bucket: str, mode: dict[str, Any], saved: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, **mode)
    url = f"s3://{bucket}/run/object.pt"
    try:
        io.save_checkpoint(saved, url)
        io.wait_for_saves()
        loaded = io.load_checkpoint(url)
        assert type(loaded) is type(saved)
        assert_same(saved, loaded)
        assert io.last_save_stats is not None
        assert io.last_save_stats.path == url
    finally:
        io.teardown()
