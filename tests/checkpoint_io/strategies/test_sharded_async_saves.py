"""ShardedAsyncSaves in one process (no process group): DCP's saves on the ordered-saves engine."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from s3_checkpoint_io.dcp import S3StorageWriter
from s3_checkpoint_io.errors import BackgroundSaveError
from s3_checkpoint_io.strategies.async_saves import ShardedAsyncSaves
from support.fault_proxy import FaultProxy
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _state(version: int) -> dict[str, Any]:
    return {"weight": torch.full((64, 64), float(version))}


def test_a_removal_runs_after_the_commit_before_it_and_wait_returns_after_both(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add_fault("PutObject", "delay", delay_s=0.5, path_contains="/.metadata")
    saves = ShardedAsyncSaves(max_pending=1)
    url = f"s3://{bucket}/new"
    committed_at_removal: list[bool] = []

    def remove() -> None:
        committed_at_removal.append("new/.metadata" in object_keys(s3_client, bucket))

    try:
        saves.save(_state(1), url, S3StorageWriter(url, endpoint_url=fault_proxy.url))
        saves.remove_after_pending(f"s3://{bucket}/old", remove)
        assert committed_at_removal == []  # the commit is still on its way
        saves.wait()
        assert committed_at_removal == [True]
    finally:
        saves.close()


def test_a_failed_save_is_raised_once_and_skips_removals_queued_before_it_was_reported(
    s3_server: Any,
) -> None:
    saves = ShardedAsyncSaves(max_pending=1)
    url = "s3://no-such-bucket-here/ckpt"
    removed: list[str] = []
    try:
        saves.save(_state(1), url, S3StorageWriter(url))
        saves.remove_after_pending("s3://b/before", lambda: removed.append("before"))
        saves._in_flight[0][1].exception(timeout=60)  # the save has failed, nobody was told yet
        saves.remove_after_pending("s3://b/after", lambda: removed.append("after"))
        with pytest.raises(BackgroundSaveError, match="no-such-bucket-here"):
            saves.wait()
        saves.wait()  # reported once
        assert removed == []
        saves.remove_after_pending("s3://b/reported", lambda: removed.append("reported"))
        saves.wait()
        assert removed == ["reported"]
    finally:
        saves.close()


def test_a_failing_removal_is_raised_at_the_next_wait_naming_its_path(s3_server: Any) -> None:
    saves = ShardedAsyncSaves(max_pending=1)
    ran = threading.Event()

    def refuse() -> None:
        ran.set()
        raise PermissionError("delete refused")

    try:
        saves.remove_after_pending("s3://b/old", refuse)
        assert ran.wait(10)
        with pytest.raises(BackgroundSaveError, match=r"removal of s3://b/old failed: PermissionError"):
            saves.wait()
    finally:
        saves.close()
