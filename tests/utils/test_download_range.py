"""``S3Store.download_range``: a byte span of an object, into the caller's buffer, pinned to one version."""

from __future__ import annotations

import pytest

from s3_utils import S3ConfigError, S3IntegrityError, S3ObjectChangedError, S3Store
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import CHUNK, small_store


def test_download_range_reads_a_span_across_chunks_with_parallel_gets(
    bucket: str, fault_proxy: FaultProxy
) -> None:
    data = payload(3 * CHUNK + 999)
    url = f"s3://{bucket}/obj"
    with small_store() as store:
        store.upload_bytes(url, data)
        etag = store.head(url).etag

    offset, length = CHUNK // 2, 2 * CHUNK + 17  # spans three chunk-sized GETs
    buffer = bytearray(length)
    with small_store(fault_proxy.url) as store:
        assert store.download_range(url, offset, buffer, etag=etag) == length

    assert buffer == data[offset : offset + length]
    assert fault_proxy.counts() == {"GetObject": 3}  # no HEAD, and only the span


def test_download_range_into_a_memoryview_of_a_larger_buffer(store: S3Store, bucket: str) -> None:
    data = payload(1000)
    store.upload_bytes(f"s3://{bucket}/small", data)
    target = bytearray(b"x" * 20)
    store.download_range(f"s3://{bucket}/small", 100, memoryview(target)[5:15])
    assert target == b"x" * 5 + data[100:110] + b"x" * 5


def test_download_range_pinned_to_an_old_etag_refuses_the_new_version(store: S3Store, bucket: str) -> None:
    url = f"s3://{bucket}/obj"
    store.upload_bytes(url, payload(100, seed=1))
    old = store.head(url).etag
    store.upload_bytes(url, payload(100, seed=2))
    with pytest.raises(S3ObjectChangedError):
        store.download_range(url, 0, bytearray(10), etag=old)


def test_download_range_past_the_end_or_into_a_read_only_buffer_fails_clearly(
    store: S3Store, bucket: str
) -> None:
    url = f"s3://{bucket}/obj"
    store.upload_bytes(url, payload(100))
    with pytest.raises(S3IntegrityError, match="asked for bytes 90-109"):
        store.download_range(url, 90, bytearray(20))
    with pytest.raises(S3ConfigError, match="writable buffer"):
        store.download_range(url, 0, memoryview(b"read-only"))
