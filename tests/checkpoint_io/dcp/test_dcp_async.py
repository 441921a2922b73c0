"""``dcp.async_save`` with S3StorageWriter and S3AsyncStager: it overlaps, commits, and fails loudly."""

from __future__ import annotations

import gc
import json
import pathlib
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from checkpoint_io.dcp.dcp_rank_targets import async_save_in_process
from s3_checkpoint_io.dcp import S3AsyncStager, S3StorageReader, S3StorageWriter
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _state(version: int) -> dict[str, Any]:
    return {"weight": torch.full((256, 64), float(version)), "step": version, "extra": {"tag": [version]}}


def _load(url: str) -> dict[str, Any]:
    state: dict[str, Any] = {"weight": torch.zeros(256, 64), "step": -1, "extra": {"tag": None}}
    dcp.load(state, storage_reader=S3StorageReader(url))
    return state


def test_dcp_async_save_returns_before_the_upload_and_commits_the_state_as_it_was_staged(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/async"
    fault_proxy.add_fault("PutObject", "delay", delay_s=1.0)  # the shard's and the metadata's PUTs
    stager = S3AsyncStager()
    state = _state(1)

    future = dcp.async_save(
        state, storage_writer=S3StorageWriter(url, endpoint_url=fault_proxy.url), async_stager=stager
    )
    assert not future.done()
    assert object_keys(s3_client, bucket) == []  # nothing committed while the upload runs
    state["weight"] += 100  # training goes on and changes the state in place
    state["extra"]["tag"].append(99)

    future.result(timeout=60)
    assert "async/.metadata" in object_keys(s3_client, bucket)
    loaded = _load(url)
    assert torch.equal(loaded["weight"], torch.full((256, 64), 1.0))
    assert loaded["extra"] == {"tag": [1]}
    stager.close()


def test_dcp_async_save_failure_is_raised_by_its_future(s3_server: Any) -> None:
    future = dcp.async_save(_state(1), storage_writer=S3StorageWriter("s3://no-such-bucket-here/ckpt"))
    with pytest.raises(CheckpointException, match="no-such-bucket-here"):
        future.result(timeout=60)


def test_s3_async_stager_reuses_buffers_only_once_no_save_holds_them() -> None:
    stager = S3AsyncStager(pin_memory=False)
    first = stager.stage(_state(1))
    address = first["weight"].data_ptr()
    in_flight = stager.stage(_state(2))  # the first save still holds its copy: new buffers
    assert in_flight["weight"].data_ptr() != address
    assert torch.equal(first["weight"], torch.full((256, 64), 1.0))

    del first, in_flight
    gc.collect()
    again = stager.stage(_state(3))
    assert again["weight"].data_ptr() == address
    assert torch.equal(again["weight"], torch.full((256, 64), 3.0))
    assert again["step"] == 3
    reshaped = stager.stage({"weight": torch.ones(2, 2), "step": 4, "extra": {"tag": []}})
    assert reshaped["weight"].shape == (2, 2)
    stager.close()


def test_staging_into_reused_buffers_copies_each_tensor_once() -> None:
    stager = S3AsyncStager(pin_memory=False)
    state = {"a": torch.ones(64, 64), "b": torch.zeros(128), "step": 1}
    first = stager.stage(state)
    del first
    gc.collect()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        staged = stager.stage(state)  # into the first save's buffers
    copies = [event for event in profile.events() if event.name == "aten::copy_"]
    assert len(copies) == 2  # torch's similarity check used to copy every tensor once more
    assert torch.equal(staged["a"], state["a"])
    assert torch.equal(staged["b"], state["b"])
    stager.close()


@pytest.mark.slow
def test_dcp_async_save_with_the_process_executor_on_two_ranks_commits_and_loads(
    bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/process"
    launch(async_save_in_process, world_size=2, args=[url, str(tmp_path)])
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"early": True, "loaded": True}
