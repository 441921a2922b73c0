"""Shard keys spread over S3 partitions ("rank-hash"), and the per-prefix request budget warnings."""

from __future__ import annotations

import hashlib
import re
import warnings
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.planner import LoadPlan, SavePlan

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.dcp._layout import busiest_prefix_ranks, prefix_sharers, rank_prefix
from s3_utils.limits import S3RequestRateWarning
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def test_dcp_rank_hash_layout_puts_shards_under_a_hashed_prefix_and_overwrites_clean_them(
    bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/ckpt"
    below = hashlib.blake2s(b"1", digest_size=1).hexdigest()  # where rank 1's shards of ckpt/ would go
    nested = f"ckpt/{below}/__{'1' * 32}_1_00000000.distcp"  # another checkpoint's shard, below ours
    s3_client.put_object(Bucket=bucket, Key=f"ckpt/{below}/.metadata", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key=nested, Body=b"x")
    for version in (1, 2):
        writer = S3StorageWriter(url, key_prefix_strategy="rank-hash")
        dcp.save({"w": torch.full((4,), float(version))}, storage_writer=writer)

    shards = [key for key in object_keys(s3_client, bucket) if key.endswith(".distcp") and key != nested]
    assert len(shards) == 1  # the first save's shard was deleted after the second commit
    assert re.fullmatch(r"ckpt/[0-9a-f]{2}/__[0-9a-f]{32}_0_[0-9a-f]{8}\.distcp", shards[0])
    assert nested in object_keys(s3_client, bucket)
    loaded = {"w": torch.zeros(4)}
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    assert torch.equal(loaded["w"], torch.full((4,), 2.0))


def test_the_ranks_sharing_a_prefix_are_counted_per_prefix_and_per_machine() -> None:
    groups = {rank: "node-a" if rank < 24 else "node-b" for rank in range(32)}  # 24 + 8 ranks

    flat = prefix_sharers(groups, "flat")  # every rank under the checkpoint's prefix
    assert flat == {rank: (32, 24 if rank < 24 else 8) for rank in range(32)}

    hashed = prefix_sharers(groups, "rank-hash")
    for rank, (writers, local) in hashed.items():
        same_prefix = [
            other for other in groups if rank_prefix(other, "rank-hash") == rank_prefix(rank, "rank-hash")
        ]
        assert writers == len(same_prefix)
        assert local == sum(groups[other] == groups[rank] for other in same_prefix)
    assert max(writers for writers, _ in hashed.values()) == busiest_prefix_ranks(32, "rank-hash")
    assert prefix_sharers({3: "node-a", 7: "node-a"}, "flat") == {3: (2, 2), 7: (2, 2)}  # writers only


def test_dcp_writer_rejects_an_unknown_key_prefix_strategy() -> None:
    with pytest.raises(ValueError, match=r"key_prefix_strategy='random'.*flat, rank-hash"):
        S3StorageWriter("s3://bucket/ckpt", key_prefix_strategy="random")


def test_dcp_coordinator_warns_when_ranks_on_one_prefix_can_exceed_s3_put_rate() -> None:
    plans = [SavePlan([]) for _ in range(400)]  # 400 ranks x 10 parts in flight on one prefix
    with pytest.warns(S3RequestRateWarning, match=r"4600 PUT/s on one prefix.*3500 PUT/s.*<= 7"):
        S3StorageWriter("s3://bucket/ckpt", key_prefix_strategy="flat").prepare_global_plan(plans)

    with warnings.catch_warnings():
        warnings.simplefilter("error", S3RequestRateWarning)  # spread over 256 prefixes: within budget
        S3StorageWriter("s3://bucket/ckpt").prepare_global_plan(plans)  # rank-hash, the default


def test_dcp_load_coordinator_warns_when_ranks_can_exceed_s3_get_rate(bucket: str) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(url))
    reader = S3StorageReader(url)
    reader.read_metadata()
    with pytest.warns(S3RequestRateWarning, match=r"400 clients x 15 requests.*6900 GET/s.*<= 11"):
        reader.prepare_global_plan([LoadPlan([]) for _ in range(400)])
