"""Streaming uploads never run out of parts: part sizes grow so 10,000 parts hold S3's 5 TiB."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3_utils import (
    S3AccessDeniedError,
    S3ClientConfig,
    S3ConfigError,
    S3Store,
    TransferConfig,
    part_sizes,
)
from s3_utils.limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, GiB, MiB
from s3_utils.part_sizes import PARTS_PER_SLOT, part_size, planned_part_size
from support.fault_proxy import FaultProxy
from support.stores import count_new_part_buffers

chunk_sizes = st.one_of(
    st.integers(MIN_PART_SIZE, MAX_PART_SIZE),
    st.floats(5, 5120).map(lambda mb: TransferConfig(chunk_size_MB=mb).chunk_size),
    st.sampled_from([MIN_PART_SIZE, MIN_PART_SIZE + 1, 64 * MiB, MAX_PART_SIZE - 1, MAX_PART_SIZE]),
)


@settings(max_examples=60, deadline=None)
@given(chunk=chunk_sizes)
def test_ten_thousand_parts_hold_five_tib_for_every_allowed_chunk_size(chunk: int) -> None:
    sizes = [part_size(chunk, n) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) >= MAX_OBJECT_SIZE
    assert all(MIN_PART_SIZE <= size <= MAX_PART_SIZE for size in sizes)
    assert sizes == sorted(sizes)  # parts only grow
    assert sizes[0] == MIN_PART_SIZE  # a small object starts uploading after its first 5 MiB
    assert sizes[11] == chunk  # ... and the parts reach the configured size within a dozen


@given(chunk=chunk_sizes, part=st.sampled_from([0, -1, MAX_PARTS + 1]))
def test_part_numbers_outside_s3s_range_are_refused(chunk: int, part: int) -> None:
    with pytest.raises(ValueError, match="part_number"):
        part_size(chunk, part)


@settings(max_examples=60, deadline=None)
@given(chunk=chunk_sizes, expected=st.integers(0, MAX_OBJECT_SIZE), concurrency=st.integers(1, 64))
def test_planned_parts_hold_five_tib_and_split_the_expected_size_into_parts_per_upload_slot(
    chunk: int, expected: int, concurrency: int
) -> None:
    planned = planned_part_size(chunk, expected, concurrency)
    sizes = [part_size(chunk, n, planned) for n in range(1, MAX_PARTS + 1)]
    assert sum(sizes) >= MAX_OBJECT_SIZE  # however wrong the estimate, any object still fits
    assert all(MIN_PART_SIZE <= size <= MAX_PART_SIZE for size in sizes)
    parts_needed = next(n for n in range(1, MAX_PARTS + 1) if sum(sizes[:n]) >= max(expected, 1))
    plan = max(1, min(PARTS_PER_SLOT * concurrency, expected // MIN_PART_SIZE))
    assert parts_needed <= max(plan, -(-expected // chunk))  # no part more than the plan needs
    if planned < chunk:  # not capped by the chunk size: the planned number of parts, no more
        assert parts_needed <= plan


@pytest.fixture
def proxied_store(fault_proxy: FaultProxy) -> Iterator[S3Store]:
    config = S3ClientConfig.from_env(endpoint_url=fault_proxy.url)
    with S3Store(config, TransferConfig(chunk_size_MB=5, max_concurrency=2)) as store:
        yield store


def test_a_large_planned_upload_sends_parts_per_slot_and_refills_sent_buffers(
    fault_proxy: FaultProxy, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = count_new_part_buffers(monkeypatch)
    data = random.Random(7).randbytes(62 * MiB)
    url = f"s3://{bucket}/planned.ckpt"
    config = S3ClientConfig.from_env(endpoint_url=fault_proxy.url)
    with S3Store(config, TransferConfig(chunk_size_MB=64, max_concurrency=2)) as store:
        with store.open_writer(url, expected_size=len(data)) as writer:
            for start in range(0, len(data), 3 * MiB):
                writer.write(data[start : start + 3 * MiB])
        assert store.download_bytes(url) == data
    # 62 MiB over 2 slots: 4 parts of about 15.9 MiB (2 per slot), not 2 of 32 MiB
    assert fault_proxy.count("UploadPart") == 4
    assert len(created) <= 2 + 1  # two in flight and one filling: the fourth refills a sent buffer


def test_a_streaming_upload_grows_its_parts_and_round_trips(
    fault_proxy: FaultProxy, proxied_store: S3Store, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(part_sizes, "PARTS_PER_DOUBLING", 2)  # 5, 5, 10, 10, 20 MiB, ...
    data = random.Random(5).randbytes(30 * MiB + 17)
    url = f"s3://{bucket}/growing.ckpt"
    with proxied_store.open_writer(url) as writer:
        for start in range(0, len(data), 3 * MiB):  # small writes, as torch.save makes
            writer.write(data[start : start + 3 * MiB])
    assert fault_proxy.count("UploadPart") == 5  # 5 + 5 + 10 + 10 + 0.00002 MiB, not 7 parts of 5 MiB
    assert proxied_store.download_bytes(url) == data


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def test_a_file_beyond_ten_thousand_chunks_is_not_refused_for_its_part_count(
    fault_proxy: FaultProxy, proxied_store: S3Store, bucket: str, tmp_path: Path, s3_client: Any
) -> None:
    # 60 GiB is 12,288 parts of 5 MiB: once refused up front, now it starts an upload (which the
    # proxy then refuses, so no 60 GiB move)
    path = sparse_file(tmp_path / "big.ckpt", 60 * GiB)
    fault_proxy.add_fault("CreateMultipartUpload", "access_denied")
    with pytest.raises(S3AccessDeniedError, match="CreateMultipartUpload"):
        proxied_store.upload_file(path, f"s3://{bucket}/big.ckpt")
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_an_object_over_five_tib_is_refused_naming_the_limit(
    fault_proxy: FaultProxy, proxied_store: S3Store, bucket: str, tmp_path: Path
) -> None:
    path = sparse_file(tmp_path / "huge.ckpt", MAX_OBJECT_SIZE + 1)
    with pytest.raises(S3ConfigError, match=r"huge.ckpt.*larger than S3's limit of 5 TiB"):
        proxied_store.upload_file(path, f"s3://{bucket}/huge.ckpt")
    assert fault_proxy.requests == []  # refused before any request
    os.remove(path)


def test_an_upload_of_known_size_is_split_into_equal_parts_sent_at_once(
    fault_proxy: FaultProxy, bucket: str
) -> None:
    data = random.Random(16).randbytes(16 * MiB)
    url = f"s3://{bucket}/known-size.ckpt"
    stored: list[int] = []
    config = S3ClientConfig.from_env(endpoint_url=fault_proxy.url)
    with S3Store(config, TransferConfig(chunk_size_MB=64, max_concurrency=10)) as store:
        store.upload_bytes(url, data, on_progress=stored.append)
        assert store.download_bytes(url) == data
    # 3 parts of ~5.7 MiB, not the ramp's 5 + 10 + 1 MiB, whose 10 MiB part finishes last
    assert fault_proxy.count("UploadPart") == 3
    tail, *full = sorted(stored)  # in the order they were stored
    assert full[0] == full[1] > tail
    assert sum(stored) == len(data)
