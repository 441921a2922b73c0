"""Real faults through a real proxy: throttling, 5xx, connections cut mid-body, dead endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from s3_utils import (
    S3EndpointError,
    S3Error,
    S3ObjectChangedError,
    S3Store,
    S3TransferError,
    S3Writer,
)
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.s3_server import running_moto_server
from support.stores import CHUNK, small_store

FAST_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05, "max_attempts": 20}


def store_via(endpoint: str, **transfer: Any) -> S3Store:
    return small_store(endpoint, **{**FAST_RETRIES, **transfer})


@pytest.fixture
def proxied(fault_proxy: FaultProxy) -> Iterator[S3Store]:
    with store_via(fault_proxy.url) as store:
        yield store


def test_503_on_30_percent_of_requests_still_round_trips(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str
) -> None:
    data = payload(4 * CHUNK + 321)
    url = f"s3://{bucket}/throttled.ckpt"
    fault_proxy.add_fault(action="slowdown", probability=0.3, seed=3)

    up = proxied.upload_bytes(url, data)
    seen = []
    with store_via(fault_proxy.url) as reader:
        reader._subscribers = (seen.append,)
        assert reader.download_bytes(url) == data
    (down,) = seen

    assert fault_proxy.injected > 0
    assert up.retries + down.retries == fault_proxy.injected
    assert up.requests + down.requests == len(fault_proxy.requests)


def test_reset_mid_part_body_retries_that_part_alone(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str
) -> None:
    data = payload(3 * CHUNK + 1)  # 4 parts
    url = f"s3://{bucket}/reset.ckpt"
    fault_proxy.add_fault("UploadPart", "reset_mid_body", times=1)

    stats = proxied.upload_bytes(url, data)

    assert fault_proxy.injected == 1
    assert stats.retries == 1
    assert fault_proxy.count("UploadPart") == 4 + 1  # only the cut part was sent again
    part_numbers = sorted(
        int(r.query["partNumber"]) for r in fault_proxy.requests if r.operation == "UploadPart"
    )
    assert len(set(part_numbers)) == 4
    assert proxied.download_bytes(url) == data


def test_reset_mid_download_body_retries_that_range_alone(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str
) -> None:
    data = payload(2 * CHUNK + 5)  # 3 ranges
    url = f"s3://{bucket}/reset-get.ckpt"
    proxied.upload_bytes(url, data)
    fault_proxy.add_fault("GetObject", "reset_mid_body", times=1)

    assert proxied.download_bytes(url) == data
    assert fault_proxy.count("GetObject") == 3 + 1


def test_part_that_keeps_failing_aborts_the_upload(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/doomed.ckpt"
    fault_proxy.add_fault("UploadPart", "internal_error", probability=1.0)
    with store_via(fault_proxy.url, max_attempts=3) as store:
        with pytest.raises(S3TransferError, match=r"UploadPart .*doomed.ckpt.*3 times.*InternalError"):
            store.upload_bytes(url, payload(2 * CHUNK + 1))
        assert not store.exists(url)
    assert fault_proxy.count("AbortMultipartUpload") == 1
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_endpoint_dying_mid_upload_leaves_previous_object_intact(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/last.ckpt"
    s3_client.put_object(Bucket=bucket, Key="last.ckpt", Body=b"previous")
    with store_via(fault_proxy.url, max_concurrency=1, connect_attempts=2) as store:
        writer = store.open_writer(url)
        writer.write(payload(2 * CHUNK + 1))  # two parts sent or on their way
        fault_proxy.stop()  # the endpoint goes away: connections are refused
        started = time.monotonic()
        with pytest.raises(S3EndpointError, match=fault_proxy.url), writer:
            writer.write(payload(CHUNK))
        assert time.monotonic() - started < 10
    assert s3_client.get_object(Bucket=bucket, Key="last.ckpt")["Body"].read() == b"previous"


@pytest.mark.slow
@pytest.mark.usefixtures("s3_server")  # for the AWS_* test credentials in the environment
def test_killed_server_mid_upload_fails_fast_with_a_clear_error() -> None:
    with running_moto_server() as server:
        server.client().create_bucket(Bucket="doomed")
        with store_via(server.endpoint_url, max_concurrency=2, connect_attempts=2) as store:
            store.upload_bytes("s3://doomed/previous", b"v1")
            writer = store.open_writer("s3://doomed/new.ckpt")
            writer.write(payload(2 * CHUNK + 1))
            server.kill()
            started = time.monotonic()
            with pytest.raises(S3Error, match=server.endpoint_url) as caught, writer:
                writer.write(payload(2 * CHUNK))
            assert time.monotonic() - started < 10
            assert isinstance(caught.value, S3EndpointError | S3TransferError)
            assert writer.closed


def test_overwrite_during_ranged_download_raises_object_changed(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/moving.ckpt"
    with store_via(fault_proxy.url, max_concurrency=1) as store:
        store.upload_bytes(url, payload(4 * CHUNK))
        fault_proxy.add_fault("GetObject", "delay", delay_s=0.2)

        def overwrite_once_reading_started() -> None:
            deadline = time.monotonic() + 10
            while fault_proxy.count("GetObject") == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            s3_client.put_object(Bucket=bucket, Key="moving.ckpt", Body=b"new version")

        writer_thread = threading.Thread(target=overwrite_once_reading_started)
        writer_thread.start()
        try:
            with pytest.raises(S3ObjectChangedError, match=r"moving.ckpt.*changed"):
                store.download_bytes(url)
        finally:
            writer_thread.join()


def write_repeatedly(writer: S3Writer, data: bytes, times: int) -> None:
    for _ in range(times):
        writer.write(data)


def test_failed_part_surfaces_in_write_not_only_at_close(fault_proxy: FaultProxy, bucket: str) -> None:
    fault_proxy.add_fault("UploadPart", "internal_error")
    url = f"s3://{bucket}/early.ckpt"
    chunk = payload(CHUNK)
    with store_via(fault_proxy.url, max_attempts=1, max_concurrency=2) as store:
        writer = store.open_writer(url)
        with pytest.raises(S3TransferError, match="InternalError"):
            write_repeatedly(writer, chunk, 50)  # the producer learns of the failure while writing
        assert writer.closed
        assert fault_proxy.count("UploadPart") < 50
        assert not store.exists(url)


def test_retries_stop_at_the_total_time_budget(fault_proxy: FaultProxy, bucket: str) -> None:
    fault_proxy.add_fault("PutObject", "slowdown")
    started = time.monotonic()
    with (
        store_via(fault_proxy.url, max_attempts=10_000, retry_total_s=0.5, retry_base_delay_s=0.05) as store,
        pytest.raises(S3TransferError, match=r"PutObject .*SlowDown \(503\)"),
    ):
        store.upload_bytes(f"s3://{bucket}/k", b"x")
    assert time.monotonic() - started < 3
    assert 2 <= fault_proxy.count("PutObject") < 100
