"""Resume at scale: on 4 real ranks (gloo, CPU processes), one listing in total picks the checkpoint."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from nemo_app import TinyRegression, rank_main
from rank_env import rank_pythonpath

from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys
from support.s3_server import MotoServer

pytestmark = pytest.mark.timeout(300)

WORLD_SIZE = 4
# name in the bucket -> the real training step whose checkpoint is stored under it
LAYOUT = {
    "run--step=4-last.ckpt": 4,
    "run--step=8-last.ckpt": 8,
    "run--step=12-last.ckpt": 12,
    "run--step=6-end.ckpt": 6,
    "run--step=10-end.ckpt": 10,  # the newest *finished* end checkpoint: the one to resume from
    "run--step=12-end.ckpt": 12,  # newer, but its upload never finished (marker below)
    "run--step=10.ckpt": 10,
}
EXPECTED = "run--step=10-end.ckpt"


@pytest.fixture(scope="module")
def real_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """Real Lightning checkpoints of TinyRegression at steps 2, 4, ..., 12 (trained here, locally)."""
    folder = tmp_path_factory.mktemp("local-checkpoints")
    torch.manual_seed(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=12,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=2, save_top_k=-1)],
    )
    trainer.fit(TinyRegression())
    return {step: (folder / f"step={step}.ckpt").read_bytes() for step in range(2, 13, 2)}


def _upload_layout(client: Any, bucket_name: str, checkpoints: dict[int, bytes]) -> str:
    for name, step in LAYOUT.items():
        client.put_object(Bucket=bucket_name, Key=f"run/checkpoints/{name}", Body=checkpoints[step])
    client.put_object(Bucket=bucket_name, Key="run/checkpoints/run--step=12-end-unfinished", Body=b"")
    return f"s3://{bucket_name}/run/checkpoints"


def test_four_ranks_resume_from_one_listing_on_rank_zero(
    s3_server: MotoServer, s3_client: Any, bucket: str, real_checkpoints: dict[int, bytes], tmp_path: Path
) -> None:
    dirpath = _upload_layout(s3_client, bucket, real_checkpoints)
    out = tmp_path / "results"
    out.mkdir()

    with FaultProxy(s3_server.endpoint_url) as proxy:
        ranks = launch(
            rank_main,
            WORLD_SIZE,
            [str(out), str(tmp_path / "logs"), dirpath, "14", "1"],
            timeout_s=240,
            env={
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_ENDPOINT_URL_S3": proxy.url,
                "PYTHONPATH": rank_pythonpath(),
            },
        )
        listings = proxy.count("ListObjectsV2")
        seen = proxy.counts()
        # the connector's resume is a collective load: one rank downloads the checkpoint, not each
        loads = [
            r.operation
            for r in proxy.requests
            if r.operation in ("HeadObject", "GetObject")
            and urllib.parse.unquote(r.path).endswith(f"/{EXPECTED}")
        ]

    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert listings == 1, f"expected exactly one listing for the whole resume, saw {seen}"
    assert sorted(loads) == ["GetObject", "HeadObject"], loads
    assert {r["rank"] for r in results} == set(range(WORLD_SIZE))
    assert {r["ckpt_path"] for r in results} == {f"{dirpath}/{EXPECTED}"}
    assert {r["start_step"] for r in results} == {10}
    assert {r["end_step"] for r in results} == {14}
    assert len({round(r["weight_sum"], 6) for r in results}) == 1  # DDP kept the ranks in step
    for rank in ranks:  # each rank logs its own load and how long it took
        assert re.search(
            rf"rank {rank.rank} loaded checkpoint {re.escape(dirpath)}/{EXPECTED} in [0-9.]+ s", rank.output
        )
    keys = object_keys(s3_client, bucket, "run/checkpoints/")
    assert f"run/checkpoints/{EXPECTED}" in keys  # what training resumed from is kept
    assert "run/checkpoints/run--step=14-last.ckpt" in keys
