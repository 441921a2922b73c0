"""Bytes go up and come back identical, at every size that crosses a part boundary."""

from __future__ import annotations

import gc
import io
import mmap
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3_utils import (
    ObjectInfo,
    S3Error,
    S3Store,
    S3Writer,
    TransferConfig,
    TransferStats,
)
from support.payloads import payload
from support.s3_objects import object_keys
from support.s3_server import MotoServer
from support.stores import CHUNK, SMALL_CHUNK_MB, small_store

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]


def write_then_fail(writer: S3Writer, data: bytes, error: Exception) -> None:
    with writer:
        writer.write(data)  # whole parts are already on their way
        raise error


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_upload_bytes_then_download_bytes_round_trips(
    s3_server: MotoServer, bucket: str, size: int, concurrency: int
) -> None:
    data = payload(size)
    with small_store(max_concurrency=concurrency) as store:
        stats = store.upload_bytes(f"s3://{bucket}/obj", data)
        assert stats.bytes == size
        assert bytes(store.download_bytes(f"s3://{bucket}/obj")) == data
        assert store.head(f"s3://{bucket}/obj").size == size


@pytest.mark.parametrize(
    ("size", "requests"),
    [(0, 1), (CHUNK, 1), (CHUNK + 1, 4), (3 * CHUNK + 1, 6)],
    ids=["empty", "one-chunk", "chunk+1", "4-parts"],
)
def test_object_up_to_one_chunk_is_a_single_put_larger_is_multipart(
    store: S3Store, bucket: str, s3_client: Any, size: int, requests: int
) -> None:
    stats = store.upload_bytes(f"s3://{bucket}/obj", payload(size))
    # single PUT = 1 request; multipart = create + parts + complete
    assert stats.requests == requests
    etag = s3_client.head_object(Bucket=bucket, Key="obj")["ETag"]
    assert ("-" in etag) == (requests > 1)


def test_writer_accepts_odd_sized_writes_like_torch_save(store: S3Store, bucket: str) -> None:
    rng = random.Random(7)
    written = bytearray()
    url = f"s3://{bucket}/odd.ckpt"
    with store.open_writer(url) as writer:
        while len(written) < 2 * CHUNK + 777:
            piece = rng.randbytes(rng.choice([1, 3, 4095, 65537, 1_000_003]))
            assert writer.write(memoryview(piece)) == len(piece)
            written += piece
            assert writer.tell() == len(written)
        writer.flush()
    assert writer.closed
    assert writer.stats is not None
    assert writer.stats.bytes == len(written)
    assert store.download_bytes(url) == written


def test_exception_inside_writer_aborts_and_leaves_no_object(
    store: S3Store, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/failed.ckpt"
    writer = store.open_writer(url)
    with pytest.raises(RuntimeError, match="producer failed"):
        write_then_fail(writer, payload(2 * CHUNK + 5), RuntimeError("producer failed"))
    assert not store.exists(url)
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")


def test_exception_inside_writer_keeps_the_previous_object(store: S3Store, bucket: str) -> None:
    url = f"s3://{bucket}/last.ckpt"
    store.upload_bytes(url, b"previous")
    with pytest.raises(KeyError):
        write_then_fail(store.open_writer(url), payload(CHUNK + 1), KeyError("boom"))
    assert store.download_bytes(url) == b"previous"


def test_writer_dropped_unclosed_publishes_nothing_and_keeps_the_previous_object(
    store: S3Store, bucket: str
) -> None:
    url = f"s3://{bucket}/last.ckpt"
    store.upload_bytes(url, b"previous")
    writer = store.open_writer(url)
    writer.write(payload(2 * CHUNK + 1))  # two whole parts are on their way
    del writer
    gc.collect()
    assert store.download_bytes(url) == b"previous"
    assert [info.key for info in store.iter_objects(f"s3://{bucket}/")] == ["last.ckpt"]


def test_download_into_buffer_and_file(store: S3Store, bucket: str, tmp_path: Path) -> None:
    data = payload(2 * CHUNK + 3)
    url = f"s3://{bucket}/x.bin"
    store.upload_bytes(url, data)

    buffer = bytearray(len(data) + 10)
    assert store.download_into(url, memoryview(buffer)) == len(data)
    assert buffer[: len(data)] == data

    target = tmp_path / "x.bin"
    stats = store.download_file(url, target)
    assert target.read_bytes() == data
    assert stats.bytes == len(data)
    assert stats.requests == 1 + 3  # HEAD + three ranges
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary file left behind


def test_download_to_lets_the_caller_allocate_once_the_size_is_known(store: S3Store, bucket: str) -> None:
    data = payload(2 * CHUNK + 5)
    store.upload_bytes(f"s3://{bucket}/obj", data)
    sizes: list[int] = []

    def allocate(info: ObjectInfo) -> memoryview:
        sizes.append(info.size)
        return memoryview(region)

    with mmap.mmap(-1, len(data)) as region:
        info = store.download_to(f"s3://{bucket}/obj", allocate)
        assert sizes == [len(data)] == [info.size]
        assert region[:] == data


def test_download_into_too_small_buffer_says_how_big(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/x", b"0123456789")
    with pytest.raises(ValueError, match="10 bytes"):
        store.download_into(f"s3://{bucket}/x", bytearray(5))


def test_failed_download_file_leaves_no_partial_file(store: S3Store, bucket: str, tmp_path: Path) -> None:
    target = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError, match="no such object"):
        store.download_file(f"s3://{bucket}/missing", target)
    assert list(tmp_path.iterdir()) == []


def test_upload_file_and_stream(store: S3Store, bucket: str, tmp_path: Path) -> None:
    data = payload(CHUNK + 99)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    store.upload_file(path, f"s3://{bucket}/from-file")
    store.upload_stream(io.BytesIO(data), f"s3://{bucket}/from-stream")
    assert store.download_bytes(f"s3://{bucket}/from-file") == data
    assert store.download_bytes(f"s3://{bucket}/from-stream") == data


def test_subscribers_receive_stats_of_every_transfer(s3_server: MotoServer, bucket: str) -> None:
    seen: list[TransferStats] = []
    with S3Store(subscribers=[seen.append], transfer_config=TransferConfig(chunk_size_MB=5)) as store:
        store.upload_bytes(f"s3://{bucket}/a", b"abc")
        store.download_bytes(f"s3://{bucket}/a")
    assert [(s.operation, s.url, s.bytes) for s in seen] == [
        ("upload", f"s3://{bucket}/a", 3),
        ("download", f"s3://{bucket}/a", 3),
    ]
    assert all(s.retries == 0 and s.seconds >= 0 for s in seen)


def test_writer_memory_stays_bounded_by_concurrency(s3_server: MotoServer, bucket: str) -> None:
    """write() blocks while max_concurrency parts are in flight: buffers held <= concurrency + 1."""
    import tracemalloc

    piece = payload(1024 * 1024)
    with small_store(max_concurrency=2) as store:
        store.upload_bytes(f"s3://{bucket}/warm-up", b"x")  # loads botocore's service models first
        tracemalloc.start()
        try:
            with store.open_writer(f"s3://{bucket}/big") as writer:
                for _ in range(8 * SMALL_CHUNK_MB):  # 8 parts
                    writer.write(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert store.head(f"s3://{bucket}/big").size == 8 * CHUNK
    # 2 parts in flight + 1 filling = 3 chunks, plus a little for botocore; far below the 8 written
    assert peak < 3.5 * CHUNK, f"peak traced memory {peak / CHUNK:.1f} chunks"


def test_closing_the_store_under_an_open_writer_never_completes_a_partial_object(
    s3_server: MotoServer, bucket: str, s3_client: Any
) -> None:
    store = small_store(max_concurrency=1)
    writer = store.open_writer(f"s3://{bucket}/torn")
    writer.write(payload(3 * CHUNK + 1))
    store.close()  # cancels parts still queued
    with pytest.raises(S3Error, match="closed"):
        writer.close()
    assert object_keys(s3_client, bucket) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(
        st.sampled_from([0, 1, 4095, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3]), min_size=1, max_size=5
    )
)
def test_any_sequence_of_write_sizes_round_trips(store: S3Store, bucket: str, sizes: list[int]) -> None:
    rng = random.Random(sum(sizes))
    pieces = [rng.randbytes(size) for size in sizes]
    url = f"s3://{bucket}/prop"
    with store.open_writer(url) as writer:
        for piece in pieces:
            writer.write(piece)
    expected = b"".join(pieces)
    assert store.download_bytes(url) == expected
    assert writer.stats is not None
    single_put = len(expected) <= CHUNK
    assert (writer.stats.requests == 1) == single_put
