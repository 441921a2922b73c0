"""The life of the background saver across process boundaries: interpreter exit and ``os.fork``."""

from __future__ import annotations

import functools
import os
import pathlib
import signal
import time
import traceback
from typing import Any

import pytest
import torch

from checkpoint_io.background.lifecycle_targets import (
    MULTIPART_BYTES,
    async_save_as_last_statement,
    multipart_state,
    trainer_save_after_fit,
)
from checkpoint_io.s3_helpers import Gate, keys, state, wait_until_idle
from s3_checkpoint_io import BackgroundSaveError, S3CheckpointIO
from support.ranks import RankTarget, spawn


def run_script(target: RankTarget, *args: str, timeout_s: float = 180) -> str:
    child = spawn(target, list(args))
    try:
        output, _ = child.communicate(timeout=timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    text = output.decode(errors="replace")
    assert child.returncode == 0, text
    return text


def load_exactly(url: str) -> dict[str, Any]:
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5)
    try:
        return io.load_checkpoint(url, weights_only=False)
    finally:
        io.teardown()


@pytest.mark.slow
def test_async_save_as_the_last_statement_of_a_script_completes_before_exit(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/run/final.ckpt"
    run_script(async_save_as_last_statement, url)
    assert keys(s3_client, bucket) == {"run/final.ckpt"}
    loaded = load_exactly(url)
    assert torch.equal(loaded["w"], multipart_state()["w"])
    assert loaded["step"] == 7


@pytest.mark.slow
def test_trainer_save_checkpoint_after_fit_completes_before_exit(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/final.ckpt"
    run_script(trainer_save_after_fit, url, str(tmp_path))
    assert keys(s3_client, bucket) == {"run/final.ckpt"}
    loaded = load_exactly(url)
    assert loaded["global_step"] == 2
    assert loaded["padding"].numel() * 4 == MULTIPART_BYTES


@pytest.mark.slow
def test_an_async_save_failing_at_exit_is_reported_with_its_url(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    missing = f"s3://missing-{bucket}/run/final.ckpt"  # the bucket does not exist: the upload fails
    output = run_script(async_save_as_last_statement, missing)
    assert f"asynchronous checkpoint save of {missing} failed" in output


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_a_fresh_saver_and_its_own_save_completes(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    parent_url, child_url = f"s3://{bucket}/run/parent.ckpt", f"s3://{bucket}/run/child.ckpt"
    gate = Gate()
    try:
        # The parent's only slot is taken by a save held inside torch.save on the worker thread.
        io.save_checkpoint({"gate": gate, **state(1)}, parent_url)
        assert io.pending_saves == [parent_url]
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                assert io.pending_saves == [], io.pending_saves
                assert not io.busy
                io.save_checkpoint(state(2), child_url)
                io.wait_for_saves(timeout=60)
                io.teardown()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        status = wait_for_child(pid, timeout_s=90)
        gate.open()
        assert os.waitstatus_to_exitcode(status) == 0
        io.wait_for_saves(timeout=60)
        assert keys(s3_client, bucket) == {"run/parent.ckpt", "run/child.ckpt"}
        assert torch.equal(io.load_checkpoint(child_url)["state_dict"]["w"], state(2)["state_dict"]["w"])
    finally:
        gate.open()
        io.teardown()


def wait_for_child(pid: int, timeout_s: float) -> int:
    """The child's wait status; a child still running after ``timeout_s`` is killed (and fails the test)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child was still running after {timeout_s}s (a dead saver?)")


def test_a_removal_never_runs_after_a_save_queued_before_it_failed(
    s3_server: Any, bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    old, new = f"s3://{bucket}/run/old.ckpt", f"s3://{bucket}/run/new.ckpt"
    try:
        io.save_checkpoint(state(1), old)
        io.wait_for_saves(timeout=60)
        gate = Gate()
        # Snapshots fine (a partial deep-copies as itself); torch.save fails once the gate opens.
        io.save_checkpoint({"gate": gate, "fn": functools.partial(lambda: 1)}, new)
        report = io._saver.raise_failures

        def failure_lands_right_after_the_check() -> None:
            report()  # remove_checkpoint's own check: nothing has failed yet
            gate.open()
            wait_until_idle(io)  # ... and now the save queued before the removal has failed

        monkeypatch.setattr(io._saver, "raise_failures", failure_lands_right_after_the_check)
        io.remove_checkpoint(old)  # what ModelCheckpoint does right after saving the new best
        monkeypatch.undo()
        wait_until_idle(io)
        assert keys(s3_client, bucket) == {"run/old.ckpt"}  # the previous best stays
        with pytest.raises(BackgroundSaveError, match=r"new\.ckpt"):
            io.wait_for_saves(timeout=60)
    finally:
        io.teardown()
