"""Downloads into a buffer read each body from the socket straight into the buffer, keeping every check."""

from __future__ import annotations

import gzip
import logging
import mmap
import os
from typing import Any

import pytest

from s3_utils import S3IntegrityError, S3Store, S3TransferError, checksums
from s3_utils.download import MemorySink, _plain_urllib3_body
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import CHUNK, small_store

FAST_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05, "max_attempts": 20}


def test_botocores_get_object_body_is_read_from_http_client_directly(
    store: S3Store, bucket: str, s3_client: Any
) -> None:
    # the path that saves a copy per byte: if a botocore or urllib3 release hides the http.client
    # response, downloads still work (the piece-by-piece path) but this test says the saving is gone
    store.upload_bytes(f"s3://{bucket}/obj", b"0123456789")
    response = s3_client.get_object(Bucket=bucket, Key="obj")
    try:
        assert _plain_urllib3_body(response) is not None
    finally:
        response["Body"].close()


def test_a_download_into_a_memory_file_mapping_is_exact(store: S3Store, bucket: str) -> None:
    data = payload(3 * CHUNK + 12345)
    url = f"s3://{bucket}/mapped.ckpt"
    store.upload_bytes(url, data)
    fd = os.memfd_create("test-download", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, len(data))
        with mmap.mmap(fd, len(data)) as mapping:
            view = memoryview(mapping)
            store.download_to(url, lambda info: view)
            assert view == data
            view.release()
    finally:
        os.close(fd)


def test_body_cut_mid_range_is_fetched_again_into_the_buffer(
    fault_proxy: FaultProxy, store: S3Store, bucket: str
) -> None:
    data = payload(2 * CHUNK + 77)  # 3 ranges
    url = f"s3://{bucket}/cut.ckpt"
    store.upload_bytes(url, data)
    fault_proxy.add_fault("GetObject", "reset_mid_body", times=2)
    target = bytearray(b"\xff" * len(data))
    seen: list[Any] = []
    with small_store(fault_proxy.url, **FAST_RETRIES) as proxied:
        proxied._subscribers = (seen.append,)
        proxied.download_into(url, target)
    assert target == data  # CRC64NVME checked against the stored one, too
    assert fault_proxy.injected == 2
    assert fault_proxy.count("GetObject") == 3 + 2
    (stats,) = seen
    assert stats.retries == 2


def test_a_range_cut_on_every_attempt_fails_naming_the_object(
    fault_proxy: FaultProxy, store: S3Store, bucket: str
) -> None:
    url = f"s3://{bucket}/always-cut.ckpt"
    store.upload_bytes(url, payload(CHUNK))
    fault_proxy.add_fault("GetObject", "reset_mid_body")
    with (
        small_store(fault_proxy.url, **{**FAST_RETRIES, "max_attempts": 3}) as proxied,
        pytest.raises(S3TransferError, match=r"GetObject .*always-cut.ckpt.* failed 3 times"),
    ):
        proxied.download_bytes(url)
    assert fault_proxy.count("GetObject") == 3


def test_ranges_read_into_the_buffer_give_their_connection_back_to_the_pool(
    store: S3Store, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"s3://{bucket}/pooled.ckpt"
    data = payload(6 * CHUNK)
    store.upload_bytes(url, data)
    with small_store(max_concurrency=1) as reader:
        reader.download_bytes(url)  # opens the one connection
        with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
            assert reader.download_bytes(url) == data  # a HEAD and six GETs on it
    assert "Starting new HTTP connection" not in caplog.text


def test_content_encoded_object_downloads_its_stored_bytes_piece_by_piece(
    store: S3Store, bucket: str, s3_client: Any
) -> None:
    stored = gzip.compress(payload(100_000))
    s3_client.put_object(Bucket=bucket, Key="encoded", Body=stored, ContentEncoding="gzip")
    response = s3_client.get_object(Bucket=bucket, Key="encoded")
    try:
        assert _plain_urllib3_body(response) is None  # the reader that decodes nothing is not used
    finally:
        response["Body"].close()
    assert store.download_bytes(f"s3://{bucket}/encoded") == stored


def test_corrupt_bytes_read_into_the_buffer_fail_the_checksum(
    store: S3Store, bucket: str, s3_client: Any
) -> None:
    data = payload(2 * CHUNK + 3)
    s3_client.put_object(
        Bucket=bucket,
        Key="rotten",
        Body=data,
        ChecksumAlgorithm="CRC64NVME",
        ChecksumCRC64NVME=checksums.to_base64(checksums.crc(b"other")),
    )
    with pytest.raises(S3IntegrityError, match="CRC64NVME"):
        store.download_into(f"s3://{bucket}/rotten", bytearray(len(data)))


def test_memory_sink_views_and_writes_at_object_offsets() -> None:
    target = bytearray(10)
    sink = MemorySink(memoryview(target), base=100)
    sink(102, b"ab")
    sink.view(105, 108)[:] = b"xyz"
    assert target == b"\0\0ab\0xyz\0\0"
