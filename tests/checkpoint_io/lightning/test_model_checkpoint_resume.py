"""S3ModelCheckpoint's ckpt_path="last": found with the plugin's own S3 settings, once, on global rank 0."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import fsspec
import pytest

from checkpoint_io.lightning.resume_targets import resume_last_on_every_rank
from checkpoint_io.lit_helpers import CaptureAtTrainStart, TinyModel, data, topk_callback, trainer
from s3_checkpoint_io import S3CheckpointIO
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_server import MotoServer, free_port

pytestmark = pytest.mark.timeout(300)


def _fit(dirpath: str, endpoint_url: str, root: pathlib.Path, max_steps: int, ckpt_path: str | None) -> int:
    """Fit with the endpoint given in code only; return the global step training started at."""
    seen = CaptureAtTrainStart()
    fit = trainer(
        plugins=[S3CheckpointIO(dirpath, endpoint_url=endpoint_url)],
        callbacks=[topk_callback(dirpath), seen],
        max_steps=max_steps,
        root=str(root),
    )
    fit.fit(TinyModel(), data(), ckpt_path=ckpt_path)
    assert seen.state is not None
    return int(seen.state["global_step"])


def test_ckpt_path_last_resumes_with_the_endpoint_given_only_in_code(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment points every SDK at a port where nothing listens; only S3CheckpointIO knows the
    # real endpoint. (Dropped cached fsspec filesystems: as in a fresh training process.)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    dirpath = f"s3://{bucket}/run"

    assert _fit(dirpath, s3_server.endpoint_url, tmp_path, max_steps=4, ckpt_path=None) == 0
    assert _fit(dirpath, s3_server.endpoint_url, tmp_path, max_steps=6, ckpt_path="last") == 4


def test_ranks_find_the_last_checkpoint_with_one_listing_on_rank_zero(
    s3_server: MotoServer, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    _fit(dirpath, s3_server.endpoint_url, tmp_path, max_steps=4, ckpt_path=None)
    out = tmp_path / "ranks"
    out.mkdir()

    with FaultProxy(s3_server.endpoint_url) as proxy:
        launch(
            resume_last_on_every_rank,
            3,
            [dirpath, proxy.url, str(out), "6"],
            timeout_s=240,
        )
        listings = proxy.count("ListObjectsV2")
        seen = proxy.counts()

    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert {r["resumed_step"] for r in results} == {4}
    assert {r["resumed_from"] for r in results} == {f"{dirpath}/last.ckpt"}
    # one listing to find last.ckpt and one at set-up (is the dirpath empty?), both on rank 0 only
    assert listings == 2, seen


def test_ckpt_path_last_picks_the_highest_epoch_and_skips_an_unfinished_one(
    s3_server: MotoServer, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    _fit(dirpath, s3_server.endpoint_url, tmp_path, max_steps=4, ckpt_path=None)
    source = {"Bucket": bucket, "Key": "run/last.ckpt"}
    # No step in these names. Written in this order, so the older epoch is the newer object and
    # "epoch=900" sorts after "epoch=1000"; epoch 2000's save never finished (its marker is still there).
    for name in ("epoch=2000-last.ckpt", "epoch=1000-last.ckpt", "epoch=900-last.ckpt"):
        s3_client.copy_object(Bucket=bucket, Key=f"run/{name}", CopySource=source)
    s3_client.put_object(Bucket=bucket, Key="run/epoch=2000-last-unfinished", Body=b"")
    s3_client.delete_object(Bucket=bucket, Key="run/last.ckpt")

    seen = CaptureAtTrainStart()
    callback = topk_callback(dirpath)
    callback.CHECKPOINT_NAME_LAST = "{epoch}-last"
    trainer(
        plugins=[S3CheckpointIO(dirpath, endpoint_url=s3_server.endpoint_url)],
        callbacks=[callback, seen],
        max_steps=6,
        root=str(tmp_path),
    ).fit(TinyModel(), data(), ckpt_path="last")

    assert seen.ckpt_path == f"{dirpath}/epoch=1000-last.ckpt"
