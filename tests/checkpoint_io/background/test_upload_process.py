"""The helper process that uploads asynchronous saves: its death, errors, exit, fork; the thread mode."""

from __future__ import annotations

import os
import signal
import traceback
from typing import Any

import psutil
import pytest
import torch

from checkpoint_io.background.lifecycle_targets import MULTIPART_BYTES, multipart_state
from checkpoint_io.background.test_async_lifecycle import load_exactly, run_script, wait_for_child
from checkpoint_io.background.upload_process_targets import async_save_as_last_statement_reporting_helper
from checkpoint_io.s3_helpers import Gate, has_exited, keys, state, wait_for, wait_until_idle
from s3_checkpoint_io import BackgroundSaveError, S3CheckpointIO
from s3_checkpoint_io.errors import UploadProcessError
from s3_utils.rate_table import TABLE_ENV_VAR
from s3_utils.request_rate import process_limiter
from support.fault_proxy import FaultProxy


def incomplete_uploads(s3_client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_an_async_save_runs_in_a_helper_process_not_in_the_trainer(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves(timeout=60)
        helper = io.upload_process_pid
        assert helper is not None
        assert helper != os.getpid()
        assert psutil.Process(helper).ppid() == os.getpid()
        stats = io.last_save_stats
        assert stats is not None
        assert stats.requests == 1  # one PutObject, counted by the writer in the helper
        assert stats.retries == 0
        io.save_checkpoint(state(2), f"s3://{bucket}/run/b.ckpt")
        io.wait_for_saves(timeout=60)
        assert io.upload_process_pid == helper  # started once, reused
        assert torch.equal(
            io.load_checkpoint(f"s3://{bucket}/run/b.ckpt")["state_dict"]["w"], state(2)["state_dict"]["w"]
        )
    finally:
        io.teardown()
    assert io.upload_process_pid is None
    assert has_exited(helper)


def test_helper_killed_mid_upload_fails_the_save_naming_the_signal_and_the_next_save_starts_a_new_one(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    old, new, after = (f"s3://{bucket}/run/{name}.ckpt" for name in ("old", "new", "after"))
    with FaultProxy(s3_server.endpoint_url) as proxy:
        io = S3CheckpointIO(
            f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, endpoint_url=proxy.url
        )
        try:
            io.save_checkpoint(state(1), old)
            io.wait_for_saves(timeout=60)
            first_helper = io.upload_process_pid
            assert first_helper is not None
            proxy.add_fault("UploadPart", "delay", delay_s=1.0)
            io.save_checkpoint(multipart_state(), new)
            io.remove_checkpoint(old)  # must not run: the save before it fails
            wait_for(lambda: proxy.count("UploadPart") >= 1, "the upload to begin sending parts")
            os.kill(first_helper, signal.SIGKILL)  # what the OOM killer does
            with pytest.raises(BackgroundSaveError) as raised:
                io.wait_for_saves(timeout=60)
            assert raised.value.path == new
            cause = raised.value.__cause__
            assert isinstance(cause, UploadProcessError)
            assert f"upload process for {new} died with signal 9 (SIGKILL)" in str(cause)
            assert keys(s3_client, bucket) == {"run/old.ckpt"}  # nothing published, the old one kept
            assert incomplete_uploads(s3_client, bucket) == ["run/new.ckpt"]  # begun, never completed
            proxy.clear_faults()
            io.save_checkpoint(state(3), after)
            io.wait_for_saves(timeout=60)
            assert io.upload_process_pid not in (None, first_helper)
            assert keys(s3_client, bucket) == {"run/old.ckpt", "run/after.ckpt"}
        finally:
            io.teardown()


def test_an_s3_error_in_the_helper_comes_back_with_its_class(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("PutObject", "access_denied")
        io = S3CheckpointIO(
            f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, endpoint_url=proxy.url
        )
        url = f"s3://{bucket}/run/denied.ckpt"
        try:
            io.save_checkpoint(state(1), url)
            with pytest.raises(BackgroundSaveError, match="denied") as raised:
                io.wait_for_saves(timeout=60)
            assert isinstance(raised.value.__cause__, PermissionError)
            assert type(raised.value.__cause__).__name__ == "S3AccessDeniedError"
            assert "PutObject" in "".join(traceback.format_exception(raised.value))  # the helper's traceback
            assert keys(s3_client, bucket) == set()
        finally:
            io.teardown()


class DefinedInMain:
    """Stands for a class of the training script, which another interpreter cannot import."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_a_checkpoint_with_objects_of_the_training_script_is_written_from_this_process(
    s3_server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DefinedInMain, "__module__", "__main__")
    monkeypatch.setattr("__main__.DefinedInMain", DefinedInMain, raising=False)
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    url = f"s3://{bucket}/run/main.ckpt"
    try:
        io.save_checkpoint({"config": DefinedInMain(5), **state(1)}, url)
        io.wait_for_saves(timeout=60)
        assert io.load_checkpoint(url, weights_only=False)["config"].value == 5
    finally:
        io.teardown()


@pytest.mark.slow
def test_a_script_ending_with_a_pending_save_lands_it_and_leaves_no_helper_behind(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/run/final.ckpt"
    output = run_script(async_save_as_last_statement_reporting_helper, url)
    helper = int(output.strip().splitlines()[-1])
    assert keys(s3_client, bucket) == {"run/final.ckpt"}
    assert torch.equal(load_exactly(url)["w"], multipart_state()["w"])
    wait_for(
        lambda: has_exited(helper),
        "the upload process to exit with the script",
        timeout_s=30,
    )
    assert MULTIPART_BYTES > 5 * 2**20  # the save had parts in flight when the script ended


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_uses_the_parents_helper_and_starts_its_own(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    parent_url, child_url = f"s3://{bucket}/run/parent.ckpt", f"s3://{bucket}/run/child.ckpt"
    gate = Gate()
    try:
        io.save_checkpoint(state(0), f"s3://{bucket}/run/warm.ckpt")
        io.wait_for_saves(timeout=60)
        parent_helper = io.upload_process_pid
        io.save_checkpoint({"gate": gate, **state(1)}, parent_url)  # held while being handed over
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                assert io.upload_process_pid is None
                io.save_checkpoint(state(2), child_url)
                io.wait_for_saves(timeout=60)
                assert io.upload_process_pid not in (None, parent_helper)
                io.teardown()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        status = wait_for_child(pid, timeout_s=90)
        assert os.waitstatus_to_exitcode(status) == 0
        assert io.upload_process_pid == parent_helper  # the child's exit left the parent's helper alone
        gate.open()
        io.wait_for_saves(timeout=60)
        assert keys(s3_client, bucket) == {"run/warm.ckpt", "run/parent.ckpt", "run/child.ckpt"}
        assert torch.equal(io.load_checkpoint(child_url)["state_dict"]["w"], state(2)["state_dict"]["w"])
    finally:
        gate.open()
        io.teardown()


def test_thread_mode_uploads_from_this_process(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(
        f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, async_uploader="thread"
    )
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        wait_until_idle(io)
        io.wait_for_saves(timeout=60)
        assert io.upload_process_pid is None
        helpers = [p for p in psutil.Process().children() if "upload_worker" in " ".join(p.cmdline())]
        assert helpers == []
        loaded = io.load_checkpoint(f"s3://{bucket}/run/a.ckpt")
        assert torch.equal(loaded["state_dict"]["w"], state(1)["state_dict"]["w"])
    finally:
        io.teardown()


def thread_niceness(pid: int) -> dict[int, int]:
    """The nice value of every thread of ``pid`` (Linux keeps one per thread)."""
    return {int(tid): os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("nice", [None, 0, 7, 19])
def test_the_helper_and_every_thread_it_starts_run_at_the_configured_niceness_below_the_trainer(
    s3_server: Any, bucket: str, nice: int | None
) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    chosen = {} if nice is None else {"upload_process_nice": nice}
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, **chosen)
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves(timeout=60)
        helper = io.upload_process_pid
        assert helper is not None
        threads = thread_niceness(helper)
        assert len(threads) > 1  # the helper's own threads, started after it lowered its priority
        expected = min(19, ours + (10 if nice is None else nice))
        assert set(threads.values()) == {expected}
        assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the trainer keeps its own
        io.save_checkpoint(state(2), f"s3://{bucket}/run/b.ckpt")
        io.wait_for_saves(timeout=60)
        assert io.upload_process_pid == helper
        assert set(thread_niceness(helper).values()) == {expected}
        loaded = io.load_checkpoint(f"s3://{bucket}/run/b.ckpt")
        assert torch.equal(loaded["state_dict"]["w"], state(2)["state_dict"]["w"])
    finally:
        io.teardown()


@pytest.mark.parametrize("nice", [-1, 20, True, 2.5])
def test_a_niceness_out_of_range_is_refused_naming_the_range(bucket: str, nice: Any) -> None:
    with pytest.raises(ValueError, match=rf"upload_process_nice={nice!r} is invalid: it must be an int"):
        S3CheckpointIO(f"s3://{bucket}/run", async_checkpointing=True, upload_process_nice=nice)


def test_an_unknown_uploader_is_refused_naming_the_choices(bucket: str) -> None:
    with pytest.raises(
        ValueError, match=r"async_uploader='fork' is invalid: use one of \('process', 'thread'\)"
    ):
        S3CheckpointIO(f"s3://{bucket}/run", async_uploader="fork")


@pytest.mark.parametrize("mode", ["sync", "process", "thread"])
def test_save_stats_carry_the_writers_own_request_and_retry_counts(
    s3_server: Any, bucket: str, s3_client: Any, mode: str
) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("PutObject", "slowdown", times=2)
        io = S3CheckpointIO(
            f"s3://{bucket}/run",
            chunk_size_MB=5,
            async_checkpointing=mode != "sync",
            async_uploader="thread" if mode == "thread" else "process",
            endpoint_url=proxy.url,
        )
        try:
            io.save_checkpoint(state(1), url)
            io.wait_for_saves(timeout=60)
        finally:
            io.teardown()
    stats = io.last_save_stats
    assert stats is not None
    assert (stats.requests, stats.retries) == (3, 2)  # one PutObject answered SlowDown twice, then stored
    assert stats.bytes == s3_client.head_object(Bucket=bucket, Key="run/a.ckpt")["ContentLength"]
    assert stats.as_metrics()["checkpoint/save_retries"] == 2.0


def test_the_helper_shares_this_processs_request_rate_table(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves(timeout=60)
        helper = io.upload_process_pid
        assert helper is not None
        ours = process_limiter().table
        assert ours.shared
        assert psutil.Process(helper).environ()[TABLE_ENV_VAR] == ours.path
        assert any(ours.path == m.path for m in psutil.Process(helper).memory_maps())  # joined, mapped
    finally:
        io.teardown()
