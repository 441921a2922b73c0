"""Sharded DCP saves and loads on several gloo CPU ranks against a real S3 server."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from checkpoint_io.dcp import dcp_rank_targets
from checkpoint_io.dcp.dcp_rank_targets import COLS, plain_state
from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp.commit_references import read_commit
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]


def _load_plain(url: str, version: int) -> dict[str, Any]:
    state = {
        k: torch.zeros_like(v) if isinstance(v, torch.Tensor) else -1 for k, v in plain_state(version).items()
    }
    dcp.load(state, storage_reader=S3StorageReader(url))
    return state


def _assert_equal(state: dict[str, Any], expected: dict[str, Any]) -> None:
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value) if isinstance(value, torch.Tensor) else state[key] == value, key


def test_dcp_save_on_two_ranks_loads_resharded_on_three_with_one_metadata_get_and_only_needed_bytes(
    bucket: str, s3_client: Any, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/run/step-1"
    launch(dcp_rank_targets.save, world_size=2, args=[url, "1"], timeout_s=120)

    keys = object_keys(s3_client, bucket, "run/step-1/")
    shards = {
        key: s3_client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        for key in keys
        if ".distcp" in key
    }
    assert len(shards) == 2
    assert "run/step-1/.metadata" in keys

    launch(
        dcp_rank_targets.load,
        world_size=3,
        args=[url, "1", str(tmp_path), fault_proxy.url],
        timeout_s=120,
    )
    for rank in range(3):
        checks = json.loads((tmp_path / f"rank{rank}.json").read_text())["checks"]
        expected = {"sharded": True, "replicated": True, "own": True, "step": True}
        assert checks == (expected if rank == 0 else {**expected, "subgroup": True}), rank
    metadata_gets = [r for r in fault_proxy.requests if r.path.endswith("/.metadata") and r.method == "GET"]
    assert len(metadata_gets) == 2  # one for the load on 3 ranks, one for the load on the subgroup of 2
    read = [json.loads((tmp_path / f"rank{rank}.json").read_text())["bytes_read"] for rank in range(3)]
    row = COLS * 4
    # rank 2 holds rows 8-9 of the sharded tensor: it reads those 2 rows, not rows 5-9 of rank 1's shard
    assert 2 * row <= read[2] < 3 * row, read
    assert all(0 < count < sum(shards.values()) for count in read), (read, shards)

    _assert_equal(_load_plain(url, 1), plain_state(1))


@pytest.mark.parametrize("how", ["raise", "kill"])
def test_dcp_rank_failing_mid_save_commits_nothing_and_previous_checkpoint_loads(
    bucket: str, s3_client: Any, tmp_path: pathlib.Path, how: str
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(plain_state(1), storage_writer=S3StorageWriter(url))
    committed = s3_client.get_object(Bucket=bucket, Key="ckpt/.metadata")["Body"].read()
    before = object_keys(s3_client, bucket)

    results = launch(
        dcp_rank_targets.save_with_failing_rank,
        world_size=2,
        args=[url, how, str(tmp_path)],
        timeout_s=90,
        check=False,
    )

    assert all(result.returncode != 0 for result in results), [r.output[-3000:] for r in results]
    assert (tmp_path / "rank0.failed").exists(), results[0].output[-3000:]  # the save raised on rank 0
    assert s3_client.get_object(Bucket=bucket, Key="ckpt/.metadata")["Body"].read() == committed
    # rank 0's finished shard may stay behind, unreferenced, until the next save deletes it
    save_id = read_commit(committed, "ckpt/.metadata").save_id
    left = set(object_keys(s3_client, bucket)) - set(before)
    assert all(key.endswith(".distcp") and save_id not in key for key in left)
    if how == "raise":  # a live rank aborts its multipart upload; a killed one cannot
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    _assert_equal(_load_plain(url, 1), plain_state(1))

    dcp.save(plain_state(2), storage_writer=S3StorageWriter(url))
    assert len([key for key in object_keys(s3_client, bucket) if key.endswith(".distcp")]) == 1


def test_dcp_save_and_load_on_four_ranks_succeed_through_a_503_storm(
    bucket: str, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/storm"
    fault_proxy.add_fault(None, "slowdown", probability=0.3, times=60, seed=7)  # every kind of request

    launch(
        dcp_rank_targets.save_and_load,
        world_size=4,
        args=[url, fault_proxy.url, str(tmp_path)],
        timeout_s=150,
    )

    assert all(json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(4))
    assert fault_proxy.injected >= 10
    failed = {r.operation for r in fault_proxy.requests if r.fault == "slowdown"}
    assert {"UploadPart", "GetObject"} <= failed, failed
