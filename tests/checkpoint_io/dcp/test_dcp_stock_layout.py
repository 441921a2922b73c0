"""What S3StorageWriter puts in S3 is torch's own DCP layout, item by item (one process, no process group)."""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import _StorageInfo

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp._stored_items import OURS, STOCK, committed_checkpoint
from s3_checkpoint_io.dcp.commit_references import read_commit
from s3_checkpoint_io.errors import CorruptCheckpointError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _object(s3_client: Any, bucket: str, key: str) -> bytes:
    body: bytes = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_every_item_is_a_storage_info_and_every_tensor_a_torch_save_stream_with_its_raw_elements_located(
    bucket: str, s3_client: Any
) -> None:
    big = torch.arange(4096, dtype=torch.float32).view(64, 64)
    state = {
        "weight": torch.randn(32, 16),
        "half": torch.randn(9).to(torch.bfloat16),
        "column": big[:, 3],  # a strided view of a 16 KiB storage
        "rows": big[10:12],  # a contiguous view at an offset into it
        "empty": torch.zeros(0, 3),
        "step": 7,
    }
    dcp.save(state, storage_writer=S3StorageWriter(f"s3://{bucket}/ckpt"))

    raw_metadata = _object(s3_client, bucket, "ckpt/.metadata")
    metadata = pickle.loads(raw_metadata)
    assert all(type(info) is _StorageInfo for info in metadata.storage_data.values())
    checkpoint = read_commit(raw_metadata, "ckpt/.metadata")
    assert checkpoint.kind == OURS
    assert checkpoint.save_id == metadata.storage_meta.save_id
    (shard,) = checkpoint.shard_names
    assert checkpoint.save_id in shard
    data = _object(s3_client, bucket, f"ckpt/{shard}")
    for index, item in checkpoint.items.items():
        stream = data[item.offset : item.end]
        if index.fqn == "step":
            assert torch.load(io.BytesIO(stream), weights_only=True) == 7
            continue
        expected = state[index.fqn].contiguous()
        assert torch.equal(torch.load(io.BytesIO(stream), weights_only=True), expected), index.fqn
        assert item.raw_offset is not None
        assert item.raw_offset % 64 == 0 or expected.numel() == 0, index.fqn
        raw = data[item.raw_offset : item.raw_offset + expected.numel() * expected.element_size()]
        assert raw == expected.reshape(-1).view(torch.uint8).numpy().tobytes(), index.fqn
    # a view is written as its own elements, not its storage's (torch.save writes whole storages)
    column = next(item for index, item in checkpoint.items.items() if index.fqn == "column")
    assert column.length < 4096


def test_a_load_of_our_layout_fetches_raw_elements_straight_into_the_destination_tensor(bucket: str) -> None:
    state = {"w": torch.randn(512, 1024)}  # 2 MiB: read in place, not through a buffer
    url = f"s3://{bucket}/direct"
    dcp.save(state, storage_writer=S3StorageWriter(url))
    target = {"w": torch.zeros(512, 1024)}
    address = target["w"].data_ptr()

    dcp.load(target, storage_reader=S3StorageReader(url))

    assert torch.equal(target["w"], state["w"])
    assert target["w"].data_ptr() == address


def test_metadata_without_our_record_is_stock_and_its_tensors_are_loaded_from_their_streams(
    bucket: str, s3_client: Any
) -> None:
    state = {"w": torch.randn(600, 700), "n": torch.arange(5)}
    url = f"s3://{bucket}/ckpt"
    dcp.save(state, storage_writer=S3StorageWriter(url))
    metadata = pickle.loads(_object(s3_client, bucket, "ckpt/.metadata"))
    metadata.storage_meta = dataclasses.replace(metadata.storage_meta)  # a copy without our attribute
    s3_client.put_object(Bucket=bucket, Key="ckpt/.metadata", Body=pickle.dumps(metadata))

    assert committed_checkpoint(metadata, url).kind == STOCK
    target = {"w": torch.zeros(600, 700), "n": torch.zeros(5, dtype=torch.int64)}
    dcp.load(target, storage_reader=S3StorageReader(url))
    assert torch.equal(target["w"], state["w"])
    assert torch.equal(target["n"], state["n"])


def test_an_item_written_through_a_dcp_extension_is_refused_by_name(bucket: str, s3_client: Any) -> None:
    dcp.save({"w": torch.ones(3)}, storage_writer=S3StorageWriter(f"s3://{bucket}/ckpt"))
    metadata = pickle.loads(_object(s3_client, bucket, "ckpt/.metadata"))
    for index, info in list(metadata.storage_data.items()):
        metadata.storage_data[index] = dataclasses.replace(info, transform_descriptors=["zstd"])

    extension = r"w was written through DCP storage extensions \['zstd'\]"
    with pytest.raises(CorruptCheckpointError, match=extension):
        committed_checkpoint(metadata, "s3://b/ckpt/.metadata")


def test_metadata_that_is_not_dcp_metadata_is_refused_saying_so() -> None:
    with pytest.raises(CorruptCheckpointError, match=r"is not DCP metadata .* holds a dict"):
        committed_checkpoint({"state_dict": {}}, "s3://b/x/.metadata")
