"""A small checkpoint uploads while it is written: its first 5 MiB part leaves before the producer is
done, instead of one PUT that waits for the last byte. Below one 5 MiB part it is still a single PUT."""

from __future__ import annotations

import time
from typing import Any

from s3_utils.limits import MIN_PART_SIZE, MiB
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import small_store


def _wait_for(proxy: FaultProxy, operation: str, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while proxy.count(operation) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proxy.count(operation)


def test_a_small_checkpoint_starts_uploading_before_it_is_fully_written(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    data = payload(12 * MiB + 5)
    url = f"s3://{bucket}/small.ckpt"
    with small_store(endpoint_url=fault_proxy.url, chunk_size_MB=64, max_concurrency=4) as store:
        with store.open_writer(url) as writer:
            writer.write(data[: 6 * MiB])  # the producer is still serializing
            assert _wait_for(fault_proxy, "UploadPart") == 1, "nothing was sent before the last byte"
            assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing visible
            writer.write(data[6 * MiB :])
        assert store.download_bytes(url) == data
    assert fault_proxy.count("UploadPart") == 2  # 5 MiB, then the remaining 7 MiB (part 2 holds 10)
    assert fault_proxy.count("PutObject") == 0


def test_an_object_of_at_most_one_5_mib_part_is_still_a_single_put(
    fault_proxy: FaultProxy, bucket: str
) -> None:
    data = payload(MIN_PART_SIZE)
    url = f"s3://{bucket}/tiny.ckpt"
    with small_store(endpoint_url=fault_proxy.url, chunk_size_MB=64) as store:
        store.upload_bytes(url, data)
        assert store.download_bytes(url) == data
    assert fault_proxy.count("PutObject") == 1
    assert fault_proxy.count("CreateMultipartUpload") == 0
