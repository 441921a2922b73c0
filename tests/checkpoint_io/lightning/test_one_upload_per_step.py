"""One upload per checkpoint step: the same-step last checkpoint is a server-side copy of the top-k one."""

from __future__ import annotations

import pathlib
from typing import Any
from urllib.parse import unquote

import pytest
import torch

from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, assert_same, capture, data, trainer
from checkpoint_io.s3_helpers import keys, state
from s3_checkpoint_io import BackgroundSaveError, S3CheckpointIO, S3ModelCheckpoint
from support.fault_proxy import FaultProxy

UPLOADS = ("PutObject", "CreateMultipartUpload")


def fit(
    dirpath: str,
    endpoint_url: str,
    root: pathlib.Path,
    max_steps: int,
    *,
    ckpt_path: str | None = None,
    **io: Any,
) -> tuple[Any, S3ModelCheckpoint, CaptureAtTrainStart]:
    """Train with top-1 (newest step wins) and last, a save every 2 steps; return the end state."""
    callback = S3ModelCheckpoint(
        dirpath=dirpath,
        filename="{step}",
        monitor="score",
        mode="max",
        save_top_k=1,
        save_last=True,
        every_n_train_steps=2,
    )
    seen = CaptureAtTrainStart()
    plugin = S3CheckpointIO(dirpath, chunk_size_MB=5, endpoint_url=endpoint_url, **io)
    model = TinyModel()
    run = trainer(plugins=[plugin], callbacks=[callback, seen], max_steps=max_steps, root=str(root))
    run.fit(model, data(), ckpt_path=ckpt_path)
    return capture(run, model), callback, seen


def load(url: str) -> dict[str, Any]:
    io = S3CheckpointIO(url.rsplit("/", 1)[0])
    try:
        return io.load_checkpoint(url, weights_only=False)
    finally:
        io.teardown()


def write_requests(proxy: FaultProxy) -> list[tuple[str, str]]:
    wanted = {*UPLOADS, "CopyObject", "DeleteObject"}
    return [
        (r.operation, unquote(r.path).rsplit("/", 1)[-1]) for r in proxy.requests if r.operation in wanted
    ]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_step_saving_top_k_and_last_uploads_once_and_copies_once(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, asynchronous: bool
) -> None:
    dirpath = f"s3://{bucket}/run"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        end, _, _ = fit(dirpath, proxy.url, tmp_path, 4, async_checkpointing=asynchronous)

    # per saving step (2 and 4): one upload of the top-k checkpoint, then last.ckpt copied from it
    assert write_requests(proxy) == [
        ("PutObject", "step=2.ckpt"),
        ("CopyObject", "last.ckpt"),
        ("PutObject", "step=4.ckpt"),
        ("DeleteObject", "step=2.ckpt"),  # the evicted top-k checkpoint, right after its replacement
        ("CopyObject", "last.ckpt"),
    ]
    assert keys(s3_client, bucket) == {"run/step=4.ckpt", "run/last.ckpt"}
    last, best = load(f"{dirpath}/last.ckpt"), load(f"{dirpath}/step=4.ckpt")
    assert_same(end["weights"], last["state_dict"])
    assert_same(end["optimizer"], last["optimizer_states"][0])
    assert last["global_step"] == 4
    assert_same(best["state_dict"], last["state_dict"])


def test_a_run_resumed_from_a_copied_last_checkpoint_continues_as_from_an_uploaded_one(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    end, _, _ = fit(dirpath, s3_server.endpoint_url, tmp_path, 2)  # last.ckpt: a copy of step=2.ckpt

    _, callback, seen = fit(dirpath, s3_server.endpoint_url, tmp_path, 4, ckpt_path="last")

    assert seen.ckpt_path == f"{dirpath}/last.ckpt"
    assert seen.state is not None
    assert seen.state["global_step"] == 2
    assert_same(end["weights"], seen.state["weights"])
    assert_same(end["optimizer"], seen.state["optimizer"])
    # the next last checkpoint replaces last.ckpt (no last-v1.ckpt beside it)
    assert callback.last_model_path == f"{dirpath}/last.ckpt"
    assert keys(s3_client, bucket) == {"run/step=4.ckpt", "run/last.ckpt"}
    assert load(f"{dirpath}/last.ckpt")["global_step"] == 4


@pytest.mark.parametrize("action", ["not_implemented", "access_denied"])
def test_a_store_refusing_copies_gets_last_uploaded_again(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, action: str
) -> None:
    dirpath = f"s3://{bucket}/run"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("CopyObject", action)
        end, _, _ = fit(dirpath, proxy.url, tmp_path, 2)

    assert write_requests(proxy) == [
        ("PutObject", "step=2.ckpt"),
        ("CopyObject", "last.ckpt"),  # refused
        ("PutObject", "last.ckpt"),
    ]
    last = load(f"{dirpath}/last.ckpt")
    assert_same(end["weights"], last["state_dict"])
    assert keys(s3_client, bucket) == {"run/step=2.ckpt", "run/last.ckpt"}


def test_an_async_copy_waits_for_its_source_to_be_durable(s3_server: Any, bucket: str) -> None:
    src, dst = f"s3://{bucket}/run/step=2.ckpt", f"s3://{bucket}/run/last.ckpt"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("PutObject", "delay", delay_s=1.0)
        io = S3CheckpointIO(f"s3://{bucket}/run", async_checkpointing=True, endpoint_url=proxy.url)
        try:
            io.save_checkpoint(state(2), src)
            io.copy_checkpoint(src, dst)  # returns at once, queued behind the save
            assert proxy.count("CopyObject") == 0
            io.wait_for_saves(timeout=60)
        finally:
            io.teardown()
        operations = [r.operation for r in proxy.requests if r.operation in ("PutObject", "CopyObject")]
    assert operations == ["PutObject", "CopyObject"]
    reader = S3CheckpointIO(f"s3://{bucket}/run", endpoint_url=s3_server.endpoint_url)
    try:
        assert torch.equal(reader.load_checkpoint(dst)["state_dict"]["w"], state(2)["state_dict"]["w"])
    finally:
        reader.teardown()


def test_an_async_copy_is_skipped_when_its_source_save_failed(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    src, dst = f"s3://{bucket}/run/step=2.ckpt", f"s3://{bucket}/run/last.ckpt"
    s3_client.put_object(Bucket=bucket, Key="run/step=2.ckpt", Body=b"an older object under the same name")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("PutObject", "access_denied", times=1)
        io = S3CheckpointIO(f"s3://{bucket}/run", async_checkpointing=True, endpoint_url=proxy.url)
        try:
            io.save_checkpoint(state(2), src)
            io.copy_checkpoint(src, dst)
            with pytest.raises(BackgroundSaveError):
                io.wait_for_saves(timeout=60)
        finally:
            io.teardown()
        assert proxy.count("CopyObject") == 0
    assert "run/last.ckpt" not in keys(s3_client, bucket)


def test_a_removal_queued_after_a_failed_async_copy_is_skipped_and_a_pending_copy_counts_as_a_save(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    dst = f"s3://{bucket}/run/last.ckpt"
    s3_client.put_object(Bucket=bucket, Key="run/step=2.ckpt", Body=b"the previous best")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("PutObject", "delay", times=1, delay_s=1.0)
        io = S3CheckpointIO(f"s3://{bucket}/run", async_checkpointing=True, endpoint_url=proxy.url)
        try:
            io.save_checkpoint(state(4), f"s3://{bucket}/run/step=4.ckpt")  # slow: the copy waits
            io.copy_checkpoint(f"s3://{bucket}/run/never-saved.ckpt", dst)  # will fail: no source
            assert dst in io.pending_saves  # so exists() and load_checkpoint() wait for it
            io.remove_checkpoint(f"s3://{bucket}/run/step=2.ckpt")
            with pytest.raises(BackgroundSaveError, match=f"copy of {dst}"):
                io.wait_for_saves(timeout=60)
        finally:
            io.teardown()
    assert keys(s3_client, bucket) == {"run/step=2.ckpt", "run/step=4.ckpt"}


def test_save_last_link_is_refused_with_what_to_use_instead(bucket: str) -> None:
    with pytest.raises(ValueError, match="save_last=True"):
        S3ModelCheckpoint(dirpath=f"s3://{bucket}/run", save_last="link")


def test_a_copied_last_cleans_the_other_same_step_last_checkpoints_when_asked(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="run/gpt--step=900-loss=7.10-last.ckpt", Body=b"same step, older")
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, clean_same_step_last=True)
    try:
        io.save_checkpoint(state(9), f"s3://{bucket}/run/gpt--step=900-loss=6.47.ckpt")
        io.copy_checkpoint(
            f"s3://{bucket}/run/gpt--step=900-loss=6.47.ckpt",
            f"s3://{bucket}/run/gpt--step=900-loss=6.47-last.ckpt",
        )
    finally:
        io.teardown()
    assert keys(s3_client, bucket) == {
        "run/gpt--step=900-loss=6.47.ckpt",
        "run/gpt--step=900-loss=6.47-last.ckpt",
    }
