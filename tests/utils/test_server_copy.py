"""S3Store.copy: a server-side copy, whole or not at all, and a copy through the client where refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from s3_utils import S3Store
from s3_utils.limits import MAX_COPY_OBJECT_SIZE
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import CHUNK, small_store

FAST_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05, "max_attempts": 5}


@pytest.fixture
def proxied(fault_proxy: FaultProxy) -> Iterator[S3Store]:
    with small_store(fault_proxy.url, **FAST_RETRIES) as store:
        yield store


def uploaded(store: S3Store, url: str, data: bytes) -> None:
    store.upload_bytes(url, data)


def test_copy_below_the_limit_is_one_copy_object_and_keeps_the_checksum(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str, s3_client: Any
) -> None:
    data = payload(2 * CHUNK + 7)
    src, dst = f"s3://{bucket}/step=3.ckpt", f"s3://{bucket}/last.ckpt"
    uploaded(proxied, src, data)
    before = len(fault_proxy.requests)

    stats = proxied.copy(src, dst)

    operations = [r.operation for r in fault_proxy.requests[before:]]
    assert operations == ["HeadObject", "CopyObject"]
    assert (stats.operation, stats.bytes) == ("copy", len(data))
    assert proxied.download_bytes(dst) == data
    assert proxied.head(dst).full_object_checksum == proxied.head(src).full_object_checksum is not None


def test_copy_above_the_limit_copies_parts_and_completes_once_all_are_there(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str
) -> None:
    data = payload(2 * CHUNK + 123)  # 3 parts of the 5 MiB chunk size
    src, dst = f"s3://{bucket}/big.ckpt", f"s3://{bucket}/big-last.ckpt"
    uploaded(proxied, src, data)
    before = len(fault_proxy.requests)
    moved: list[int] = []

    stats = proxied.copy(src, dst, moved.append, single_request_limit=CHUNK)

    operations = [r.operation for r in fault_proxy.requests[before:]]
    assert "CopyObject" not in operations
    assert operations.count("UploadPartCopy") == 3
    assert operations[-1] == "CompleteMultipartUpload"
    assert "PutObject" not in operations
    assert "UploadPart" not in operations
    assert sorted(moved) == sorted([CHUNK, CHUNK, 123])
    assert stats.bytes == len(data)
    assert proxied.download_bytes(dst) == data  # also checks the carried-over full-object CRC64NVME
    assert MAX_COPY_OBJECT_SIZE == 5 * 1024**3


def test_a_failed_part_copy_aborts_and_leaves_the_previous_target(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str, s3_client: Any
) -> None:
    src, dst = f"s3://{bucket}/new.ckpt", f"s3://{bucket}/last.ckpt"
    uploaded(proxied, src, payload(2 * CHUNK + 1, seed=1))
    uploaded(proxied, dst, b"previous last")
    fault_proxy.add_fault("UploadPartCopy", "internal_error")  # every attempt: retries run out

    with pytest.raises(Exception, match="UploadPartCopy"):
        proxied.copy(src, dst, single_request_limit=CHUNK)

    assert proxied.download_bytes(dst) == b"previous last"
    assert fault_proxy.count("AbortMultipartUpload") == 1
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("action", ["not_implemented", "access_denied"])
@pytest.mark.parametrize("limit", [MAX_COPY_OBJECT_SIZE, CHUNK], ids=["CopyObject", "UploadPartCopy"])
def test_a_store_refusing_copies_gets_the_bytes_through_the_client(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str, s3_client: Any, action: str, limit: int
) -> None:
    data = payload(2 * CHUNK + 9, seed=3)
    src, dst = f"s3://{bucket}/s.ckpt", f"s3://{bucket}/d.ckpt"
    uploaded(proxied, src, data)
    fault_proxy.add_fault("CopyObject", action)
    fault_proxy.add_fault("UploadPartCopy", action)
    moved: list[int] = []

    stats = proxied.copy(src, dst, moved.append, single_request_limit=limit)

    assert stats.operation == "upload"
    assert sum(moved) == len(data)
    assert proxied.download_bytes(dst) == data
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
