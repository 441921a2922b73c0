"""DCP saves and loads through S3StorageWriter / S3StorageReader in one process (no process group)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import LoadPlan, WriteItem

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp._stored_items import CommittedCheckpoint
from s3_checkpoint_io.dcp.commit_references import read_commit
from s3_utils import S3ObjectChangedError
from support.fault_proxy import FaultProxy
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _state(version: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(version)
    return {
        "weight": torch.randn(64, 32, generator=generator),
        "half": torch.randn(7, generator=generator).to(torch.bfloat16),
        "column": torch.randn(8, 8, generator=generator)[:, 1],  # a non-contiguous view
        "scalar": torch.tensor(version),
        "empty": torch.zeros(0, 3),
        "step": version,
        "extra": {"lr": 0.1 * version, "name": f"v{version}"},
    }


def _template() -> dict[str, Any]:
    """A state dict of the saved structure to load into (DCP loads nested dicts key by key)."""
    state: dict[str, Any] = {
        key: torch.zeros_like(value) if isinstance(value, torch.Tensor) else None
        for key, value in _state(0).items()
    }
    state["extra"] = {"lr": None, "name": None}
    return state


def _assert_state(state: dict[str, Any], expected: dict[str, Any]) -> None:
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert state[key].dtype == value.dtype, key
            assert torch.equal(state[key], value), key
        else:
            assert state[key] == value, key


def _commit(s3_client: Any, bucket: str, key: str) -> CommittedCheckpoint:
    return read_commit(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read(), key)


def test_dcp_save_then_load_round_trips_tensors_and_objects(bucket: str, s3_client: Any) -> None:
    url = f"s3://{bucket}/run/step-1"
    dcp.save(_state(1), storage_writer=S3StorageWriter(url, key_prefix_strategy="flat"))

    commit = _commit(s3_client, bucket, "run/step-1/.metadata")
    (shard,) = commit.shard_names
    assert re.fullmatch(rf"__{commit.save_id}_0_[0-9a-f]{{8}}\.distcp", shard)
    assert object_keys(s3_client, bucket) == ["run/step-1/.metadata", f"run/step-1/{shard}"]

    loaded = _template()
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    _assert_state(loaded, _state(1))


def test_dcp_checkpoint_id_given_to_dcp_selects_the_s3_storage(bucket: str) -> None:
    url = f"s3://{bucket}/by-id"
    dcp.save(_state(3), checkpoint_id=url, storage_writer=S3StorageWriter())
    loaded = _template()
    dcp.load(loaded, checkpoint_id=url, storage_reader=S3StorageReader())
    _assert_state(loaded, _state(3))


def test_dcp_overwrite_commits_the_new_save_and_deletes_the_old_shards(bucket: str, s3_client: Any) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(_state(1), storage_writer=S3StorageWriter(url, key_prefix_strategy="flat"))
    first = _commit(s3_client, bucket, "ckpt/.metadata")

    dcp.save(_state(2), storage_writer=S3StorageWriter(url, key_prefix_strategy="flat"))

    commit = _commit(s3_client, bucket, "ckpt/.metadata")
    assert commit.save_id != first.save_id
    (shard,) = commit.shard_names
    assert shard.startswith(f"__{commit.save_id}_0_")
    assert {item.name for item in commit.items.values()} == set(commit.shard_names)
    assert object_keys(s3_client, bucket) == ["ckpt/.metadata", f"ckpt/{commit.shard_names[0]}"]
    loaded = _template()
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    _assert_state(loaded, _state(2))


class _RaisingPlanner(DefaultSavePlanner):
    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.index.fqn == "after":
            raise RuntimeError("failed on purpose with a part uploaded")
        return super().resolve_data(write_item)


def test_dcp_failed_save_aborts_its_upload_and_the_previous_checkpoint_stays(
    bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(_state(1), storage_writer=S3StorageWriter(url))
    before = object_keys(s3_client, bucket)

    big = {"big": torch.ones(6 * 1024 * 1024 // 4), "after": torch.ones(2)}  # more than one 5 MiB part
    with pytest.raises(CheckpointException) as caught:
        dcp.save(big, storage_writer=S3StorageWriter(url, chunk_size_MB=5), planner=_RaisingPlanner())
    assert "failed on purpose" in str(caught.value.failures[0])

    assert object_keys(s3_client, bucket) == before
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    loaded = _template()
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    _assert_state(loaded, _state(1))


def test_dcp_save_and_load_succeed_through_503_bursts(bucket: str, fault_proxy: FaultProxy) -> None:
    url = f"s3://{bucket}/flaky"
    big = {"big": torch.arange(3 * 1024 * 1024, dtype=torch.float32), **_state(4)}  # 12 MiB: 3 parts
    for operation in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PutObject"):
        fault_proxy.add_fault(operation, "slowdown", times=2)
    dcp.save(big, storage_writer=S3StorageWriter(url, chunk_size_MB=5, endpoint_url=fault_proxy.url))
    saved_faults = fault_proxy.injected
    assert saved_faults == 8

    fault_proxy.add_fault("HeadObject", "slowdown", times=2)
    fault_proxy.add_fault("GetObject", "slowdown", times=3)
    loaded = {"big": torch.zeros(3 * 1024 * 1024), **_template()}
    dcp.load(loaded, storage_reader=S3StorageReader(url, chunk_size_MB=5, endpoint_url=fault_proxy.url))
    assert fault_proxy.injected == saved_faults + 5
    _assert_state(loaded, big)


def test_dcp_load_of_a_prefix_with_no_commit_raises_not_found(bucket: str) -> None:
    with pytest.raises(CheckpointException) as caught:
        dcp.load(_template(), storage_reader=S3StorageReader(f"s3://{bucket}/never-saved"))
    assert f"no committed checkpoint at s3://{bucket}/never-saved" in str(caught.value.failures[0])


def test_dcp_storage_rejects_a_checkpoint_id_that_is_not_an_s3_prefix() -> None:
    with pytest.raises(ValueError, match="s3://bucket/key"):
        S3StorageWriter("/tmp/ckpt")
    with pytest.raises(ValueError, match="names a bucket only"):
        S3StorageReader("s3://my-bucket")


def test_dcp_plan_caching_is_refused_without_touching_the_committed_checkpoint(
    bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/cached"
    dcp.save(
        _state(1), storage_writer=S3StorageWriter(url), planner=DefaultSavePlanner(enable_plan_caching=True)
    )
    committed = s3_client.get_object(Bucket=bucket, Key="cached/.metadata")["Body"].read()

    with pytest.raises(CheckpointException) as caught:  # a replayed plan carries the old save id
        dcp.save(
            _state(2),
            storage_writer=S3StorageWriter(url),
            planner=DefaultSavePlanner(enable_plan_caching=True),
        )
    assert "plan caching" in str(caught.value.failures[0])

    assert s3_client.get_object(Bucket=bucket, Key="cached/.metadata")["Body"].read() == committed
    loaded = _template()
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    _assert_state(loaded, _state(1))


def test_dcp_load_reads_only_the_metadata_and_the_shards_it_references(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(_state(1), storage_writer=S3StorageWriter(url))
    stray = f"ckpt/__{'0' * 32}_0_deadbeef.distcp"  # a failed save's leftover, named like a shard
    s3_client.put_object(Bucket=bucket, Key=stray, Body=b"not part of the commit")
    (shard,) = _commit(s3_client, bucket, "ckpt/.metadata").shard_names

    loaded = _template()
    dcp.load(loaded, storage_reader=S3StorageReader(url, endpoint_url=fault_proxy.url))

    _assert_state(loaded, _state(1))
    read = [r.path for r in fault_proxy.requests if r.operation in ("GetObject", "HeadObject")]
    assert sorted(set(read)) == [f"/{bucket}/ckpt/.metadata", f"/{bucket}/ckpt/{shard}"]
    assert fault_proxy.count("ListObjectsV2") == 0


def test_dcp_rank_that_read_another_commit_than_the_coordinator_fails_instead_of_mixing(bucket: str) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(_state(1), storage_writer=S3StorageWriter(url))
    coordinator, late_rank = S3StorageReader(url), S3StorageReader(url)
    coordinator.read_metadata()
    (plan,) = coordinator.prepare_global_plan([LoadPlan([])])
    dcp.save(_state(2), storage_writer=S3StorageWriter(url))  # overwritten before the other rank reads
    late_rank.read_metadata()

    with pytest.raises(S3ObjectChangedError, match="overwritten during the load"):
        late_rank.read_data(plan, DefaultLoadPlanner())


def test_dcp_load_of_part_of_a_shard_reads_only_its_bytes_straight_into_the_tensor(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/part"
    elements = 3 * 1024 * 1024 // 2  # 6 MiB of float32 each: two 5 MiB ranges per tensor
    state = {
        "a": torch.arange(elements, dtype=torch.float32),
        "b": -torch.arange(elements, dtype=torch.float32),
    }
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    (shard,) = _commit(s3_client, bucket, "part/.metadata").shard_names
    shard_size = s3_client.head_object(Bucket=bucket, Key=f"part/{shard}")["ContentLength"]

    wanted = {"b": torch.zeros(elements)}
    address = wanted["b"].data_ptr()
    reader = S3StorageReader(url, chunk_size_MB=5, endpoint_url=fault_proxy.url)
    dcp.load(wanted, storage_reader=reader)

    assert torch.equal(wanted["b"], state["b"])
    assert wanted["b"].data_ptr() == address
    assert reader.bytes_read == elements * 4 < shard_size
    shard_gets = [r for r in fault_proxy.requests if r.path.endswith(shard)]
    assert [r.operation for r in shard_gets] == ["GetObject", "GetObject"]  # two ranges, no HEAD
