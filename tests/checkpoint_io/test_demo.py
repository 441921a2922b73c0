"""The demo (``./dev demo``) end to end with small numbers: train, SIGKILL, resume from S3, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from s3_utils.checkpoint_names import step_from_name
from support.s3_objects import object_keys

DEMO = Path(__file__).resolve().parents[2] / "demo" / "demo.py"
STEPS, EVERY = 60, 10


@pytest.mark.slow
def test_demo_resumes_from_the_last_checkpoint_saved_before_the_kill(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            f"--steps={STEPS}",
            f"--every-n-steps={EVERY}",
            "--hidden=64",
            "--step-delay=0.05",
            "--timeout=240",
            f"--summary-json={summary_file}",
        ],
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== summary ==" in result.stdout
    assert "SIGKILLed" in result.stdout
    # not a terminal: a readable log (a line per N steps and per save), no redrawn progress bar
    assert "\r" not in result.stdout + result.stderr
    assert f"  step {STEPS}/{STEPS}" in result.stdout
    # the step-60 save: its top-k checkpoint (last.ckpt then is a server-side copy of it) or, when
    # step 60 is not in the top 2, its last checkpoint
    assert f"  saved demo-step={STEPS}-" in result.stdout

    summary = json.loads(summary_file.read_text())
    killed_after = summary["killed_after"]
    assert step_from_name(killed_after) >= int(STEPS * 0.6)
    # the resume picked a -last checkpoint at least as new as the one seen in S3 before the kill
    resumed = summary["resumed_from"]
    assert resumed.endswith("-last.ckpt")
    assert step_from_name(resumed) == summary["resume_step"]
    assert summary["resume_step"] >= step_from_name(killed_after)
    assert summary["final_step"] == STEPS
    names = [c["name"] for c in summary["checkpoints"]]
    assert f"demo-step={STEPS}-last.ckpt" in names
    assert all(c["size"] > 0 for c in summary["checkpoints"])
    assert summary["saves"]
    assert all(s["asynchronous"] and s["upload_s"] > 0 and s["bytes"] > 0 for s in summary["saves"])
    assert f"resumed from: {resumed}" in result.stdout


def test_demo_refuses_a_dirpath_that_already_holds_checkpoints(s3_client: Any, bucket: str) -> None:
    # an old -last checkpoint with a higher step would hijack the demo's resume
    s3_client.put_object(Bucket=bucket, Key="demo/old--step=999-last.ckpt", Body=b"x")
    result = subprocess.run(
        [sys.executable, str(DEMO), f"--dirpath=s3://{bucket}/demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "is not empty" in result.stderr
    assert "--clean" in result.stderr
    assert len(object_keys(s3_client, bucket)) == 1
