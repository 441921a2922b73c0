"""An upload whose size is planned over several parts creates its multipart upload while the first part
fills, and is still exactly one correct object (or nothing) whatever the estimate and whatever fails."""

from __future__ import annotations

import time
from typing import Any

import pytest

from s3_utils import S3Store
from s3_utils.errors import S3Error
from s3_utils.limits import MiB
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import small_store

FAST_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05}


def _wait_for(proxy: FaultProxy, operation: str, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while proxy.count(operation) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proxy.count(operation)


def _open_uploads(s3_client: Any, bucket: str) -> list[Any]:
    return list(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_a_planned_upload_creates_its_multipart_upload_while_the_first_part_is_filling(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    data = payload(16 * MiB)
    url = f"s3://{bucket}/planned.ckpt"
    with small_store(endpoint_url=fault_proxy.url, chunk_size_MB=64, max_concurrency=10) as store:
        with store.open_writer(url, expected_size=len(data)) as writer:
            writer.write(data[:MiB])  # far less than the first planned part (~5.7 MiB)
            assert _wait_for(fault_proxy, "CreateMultipartUpload") == 1, "the create waited for part 1"
            assert fault_proxy.count("UploadPart") == 0
            writer.write(data[MiB:])
        assert store.download_bytes(url) == data
    assert fault_proxy.count("CreateMultipartUpload") == 1
    assert fault_proxy.count("UploadPart") == 3
    assert fault_proxy.count("PutObject") == 0


def test_an_object_far_smaller_than_planned_is_stored_whole_as_a_one_part_upload(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    data = payload(100 * 1024)
    url = f"s3://{bucket}/overestimated.ckpt"
    with small_store(endpoint_url=fault_proxy.url, chunk_size_MB=64, max_concurrency=10) as store:
        with store.open_writer(url, expected_size=64 * MiB) as writer:
            writer.write(data)
        assert store.download_bytes(url) == data
    assert (fault_proxy.count("UploadPart"), fault_proxy.count("CompleteMultipartUpload")) == (1, 1)
    assert _open_uploads(s3_client, bucket) == []


def _save_in_pieces(store: S3Store, url: str, size: int, fail_after: int | None = None) -> None:
    """Write ``size`` bytes in 1 MiB pieces, as torch.save would; raise after ``fail_after`` pieces."""
    with store.open_writer(url, expected_size=size) as writer:
        for piece in range(size // MiB):
            if piece == fail_after:
                raise RuntimeError("pickling failed")
            writer.write(payload(MiB))


def test_a_failed_early_create_fails_the_save_and_stores_nothing(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    fault_proxy.add_fault("CreateMultipartUpload", "internal_error")
    url = f"s3://{bucket}/create-fails.ckpt"
    store = small_store(endpoint_url=fault_proxy.url, max_attempts=2, **FAST_RETRIES)
    with store, pytest.raises(S3Error, match=r"create-fails\.ckpt"):
        _save_in_pieces(store, url, 16 * MiB)
    assert fault_proxy.count("CreateMultipartUpload") == 2  # retried, then given up
    assert fault_proxy.count("UploadPart") == 0
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert _open_uploads(s3_client, bucket) == []


def test_a_producer_that_fails_right_after_the_early_create_leaves_no_upload_behind(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    fault_proxy.add_fault("CreateMultipartUpload", "delay", delay_s=0.3)  # still in flight at the error
    url = f"s3://{bucket}/producer-fails.ckpt"
    store = small_store(endpoint_url=fault_proxy.url)
    with store, pytest.raises(RuntimeError, match="pickling"):
        _save_in_pieces(store, url, 16 * MiB, fail_after=1)
    assert fault_proxy.count("CreateMultipartUpload") == 1
    assert fault_proxy.count("AbortMultipartUpload") == 1
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert _open_uploads(s3_client, bucket) == []
