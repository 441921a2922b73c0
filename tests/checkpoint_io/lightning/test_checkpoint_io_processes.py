"""Checkpointing across processes: 2-rank DDP save + resume, and a trainer SIGKILLed mid-upload."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time
from typing import Any

import psutil
import pytest
import torch

from checkpoint_io.lightning.train_targets import (
    ddp_save_and_resume,
    load_peak_memory,
    run_until_killed,
    sync_save_peak_memory,
)
from checkpoint_io.lit_helpers import resume
from checkpoint_io.s3_helpers import has_exited, keys, wait_for
from s3_checkpoint_io import S3CheckpointIO
from support.fault_proxy import FaultProxy
from support.ranks import launch, spawn

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_two_rank_ddp_saves_and_resumes_from_last(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, mode: str
) -> None:
    dirpath = f"s3://{bucket}/ddp"
    launch(
        ddp_save_and_resume,
        world_size=2,
        args=[dirpath, str(tmp_path), mode],
        timeout_s=150,
    )
    # the top 2 of steps 2, 4 and 6 (step 6 saved by the resumed run), and last
    assert keys(s3_client, bucket) == {"ddp/step=4.ckpt", "ddp/step=6.ckpt", "ddp/last.ckpt"}
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        assert result["ended_step"] == 4
        assert result["resumed_step"] == 4
        assert result["resumed_from"] == f"{dirpath}/last.ckpt"
        assert result["resumed_weights"] == result["ended_weights"]
    assert ranks[0]["resumed_weights"] == ranks[1]["resumed_weights"]


def test_trainer_killed_mid_async_upload_leaves_the_previous_checkpoint_and_resume_uses_it(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        # Parts are held until the proxy stops, so no upload left running after the kill could finish:
        # only the big step-4 checkpoint has parts.
        proxy.add_fault("UploadPart", "stall")
        child = spawn(run_until_killed, [dirpath, proxy.url, str(tmp_path)])
        try:
            deadline = time.monotonic() + 90
            while True:
                assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
                assert time.monotonic() < deadline, "the step-4 upload never started"
                if proxy.count("UploadPart") >= 2:  # parts are on their way: the upload is half done
                    break
                time.sleep(0.05)
            helpers = [helper.pid for helper in psutil.Process(child.pid).children()]
            assert helpers, "the async save runs in an upload helper process"
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            wait_for(
                lambda: all(has_exited(helper) for helper in helpers),
                "the upload helper to exit with its trainer",
                timeout_s=30,
            )
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
            if child.stdout:
                child.stdout.close()
    uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["run/step=4.ckpt"]  # begun, never completed
    assert keys(s3_client, bucket) == {"run/step=2.ckpt", "run/last.ckpt"}  # no partial object visible
    io = S3CheckpointIO(dirpath)
    assert io.load_checkpoint(f"{dirpath}/last.ckpt")["global_step"] == 2
    seen = resume(bucket, tmp_path, True, "last", max_steps=3)
    assert seen.state is not None
    assert seen.state["global_step"] == 2
    assert seen.ckpt_path == f"{dirpath}/last.ckpt"


def test_sync_save_streams_without_a_whole_checkpoint_copy_in_memory(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    tensor_mib = 96
    out = tmp_path / "peak.json"
    url = f"s3://{bucket}/run/big.ckpt"
    child = spawn(sync_save_peak_memory, [url, str(out), str(tensor_mib)])
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output.decode(errors="replace")
    measured = json.loads(out.read_text())
    head = s3_client.head_object(Bucket=bucket, Key="run/big.ckpt")
    assert head["ContentLength"] == measured["bytes"] > tensor_mib * 2**20
    # (max_write_concurrency + 2) x 5 MiB parts is 30 MiB; a serialized copy would be 96 MiB more
    assert measured["peak_rise_mib"] < 48, measured


def test_load_needs_one_checkpoint_of_memory_not_two(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    tensor_mib = 96
    url = f"s3://{bucket}/run/big.ckpt"
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    io.save_checkpoint({"w": torch.arange(tensor_mib * 2**20 // 4, dtype=torch.int32)}, url)
    io.save_checkpoint({"w": torch.ones(4)}, url + ".warmup")
    out = tmp_path / "peak.json"
    child = spawn(load_peak_memory, [url, str(out)])
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output.decode(errors="replace")
    measured = json.loads(out.read_text())
    n = tensor_mib * 2**20 // 4
    assert measured["sum"] == n * (n - 1) // 2  # every value arrived
    # the tensors are views of the downloaded pages; a download buffer plus an unpickled copy
    # would be about 2 x 96 MiB
    assert measured["peak_rise_mib"] < 1.4 * tensor_mib, measured
