"""A DDP resume downloads its single-file checkpoint once per node, not once per rank (real gloo ranks,
moto over HTTP behind FaultProxy), and a failure of the reading rank reaches every rank as an error."""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time
import urllib.parse
from typing import Any

import pytest
import torch

from checkpoint_io.lightning.read_once_targets import resume_ddp
from checkpoint_io.lit_helpers import assert_same, first_run
from support.fault_proxy import FaultProxy
from support.ranks import RankResult, launch

pytestmark = pytest.mark.timeout(180)

WORLD_SIZE = 3


def _requests_for(proxy: FaultProxy, operation: str, key: str) -> int:
    return sum(
        1
        for r in proxy.requests
        if r.operation == operation and urllib.parse.unquote(r.path).endswith(f"/{key}")
    )


def _first_run(bucket: str, tmp_path: pathlib.Path) -> tuple[Any, pathlib.Path]:
    """A 4-step run that saved ``run/last.ckpt``: its state, and an empty folder for the ranks' output."""
    saved = first_run(bucket, tmp_path / "first", False, max_steps=4)
    out = tmp_path / "ranks"
    out.mkdir()
    return saved, out


def _resume_every_rank(
    proxy: FaultProxy, bucket: str, out: pathlib.Path, *, timeout_s: float, check: bool = True
) -> list[RankResult]:
    """``WORLD_SIZE`` gloo ranks resuming from ``run/last.ckpt`` through ``proxy``."""
    dirpath = f"s3://{bucket}/run"
    args = [dirpath, proxy.url, f"{dirpath}/last.ckpt", str(out), "1"]
    return launch(resume_ddp, WORLD_SIZE, args, timeout_s=timeout_s, check=check)


def test_a_ddp_resume_downloads_once_even_throttled_and_every_rank_restores_the_saved_state(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    saved, out = _first_run(bucket, tmp_path)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("GetObject", "slowdown", times=2, path_contains="run/last.ckpt")
        _resume_every_rank(proxy, bucket, out, timeout_s=150)
        gets = _requests_for(proxy, "GetObject", "run/last.ckpt")
        heads = _requests_for(proxy, "HeadObject", "run/last.ckpt")

    # the resume: one download (one HEAD, one ranged GET asked again after each of the two SlowDowns),
    # not three; then the last save's check whether its name is taken (a HEAD on rank 0), and rank 0's
    # lone load after training (a HEAD and a GET)
    assert (heads, gets, proxy.injected) == (3, 4, 2)
    for rank in range(WORLD_SIZE):
        restored = torch.load(out / f"rank{rank}.pt", weights_only=False)
        assert_same(saved, restored, f"rank {rank}")


def test_the_reading_rank_killed_mid_download_fails_every_other_rank_promptly_and_clearly(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    _, out = _first_run(bucket, tmp_path)
    dirpath = f"s3://{bucket}/run"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        # the reader's GET is held at the proxy: the window in which it is killed
        proxy.add_fault("GetObject", "delay", delay_s=60, path_contains="run/last.ckpt")
        killer = threading.Thread(target=_kill_rank_zero_once_its_get_waits, args=(proxy, out), daemon=True)
        killer.start()
        started = time.monotonic()
        results = _resume_every_rank(proxy, bucket, out, timeout_s=120, check=False)
        elapsed = time.monotonic() - started
        killer.join(timeout=5)

    assert results[0].returncode == -signal.SIGKILL
    for result in results[1:]:
        # exited on its own (launch kills stragglers 5 s after the first failure: that would be -9)
        assert result.returncode == 1, result.output[-3000:]
        assert "NodeReaderLostError" in result.output, result.output[-3000:]
        assert f"{dirpath}/last.ckpt" in result.output
        assert "global rank 0 reads it" in result.output
    assert elapsed < 60  # well inside the 60 s the proxy holds the GET, let alone gloo's 30 minutes


def _kill_rank_zero_once_its_get_waits(proxy: FaultProxy, out: pathlib.Path) -> None:
    deadline = time.monotonic() + 90
    pid_file = out / "pid0"
    while time.monotonic() < deadline:
        if proxy.injected >= 1 and pid_file.exists():  # the delayed GET has arrived: mid-download
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
            return
        time.sleep(0.05)


def test_access_denied_on_the_readers_get_is_raised_on_every_rank_naming_the_url(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    _, out = _first_run(bucket, tmp_path)
    dirpath = f"s3://{bucket}/run"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("GetObject", "access_denied", path_contains="run/last.ckpt")
        results = _resume_every_rank(proxy, bucket, out, timeout_s=120, check=False)
        gets = _requests_for(proxy, "GetObject", "run/last.ckpt")

    assert gets == 1  # only the reader asked
    for result in results:
        assert result.returncode == 1, result.output[-3000:]
        assert "S3AccessDeniedError" in result.output, result.output[-3000:]
        assert f"{dirpath}/last.ckpt" in result.output
        if result.rank:
            assert "raised on global rank 0 while downloading" in result.output
