"""The on_progress hook: every byte of a transfer is reported exactly once, retried parts included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3_utils import S3Store
from support.fault_proxy import FaultProxy
from support.payloads import payload
from support.stores import CHUNK, small_store

FAST_RETRIES = {"retry_base_delay_s": 0.005, "retry_max_delay_s": 0.05, "max_attempts": 10}


class Tally:
    """A progress observer that checks it is called one at a time."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._busy = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        assert self._busy.acquire(blocking=False), "progress calls overlapped"
        try:
            self.calls.append(nbytes)
        finally:
            self._busy.release()


@pytest.fixture
def proxied(fault_proxy: FaultProxy) -> Iterator[S3Store]:
    with small_store(fault_proxy.url, **FAST_RETRIES) as store:
        yield store


@pytest.mark.parametrize("size", [123, 3 * CHUNK + 17], ids=["single-put", "multipart"])
def test_upload_progress_adds_up_to_the_size_with_a_retried_part(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str, size: int
) -> None:
    data = payload(size)
    operation = "UploadPart" if size > CHUNK else "PutObject"
    fault_proxy.add_fault(operation, "reset_mid_body", times=1)
    tally = Tally()

    proxied.upload_bytes(f"s3://{bucket}/up.ckpt", data, tally)

    assert fault_proxy.injected == 1
    assert sum(tally.calls) == size
    assert all(n > 0 for n in tally.calls)
    assert len(tally.calls) == -(-size // CHUNK)  # one call per part: the retried one counted once


def test_writer_and_file_uploads_report_progress(proxied: S3Store, bucket: str, tmp_path: Path) -> None:
    data = payload(2 * CHUNK + 5)
    path = tmp_path / "model.ckpt"
    path.write_bytes(data)
    from_file, from_writer = Tally(), Tally()

    proxied.upload_file(path, f"s3://{bucket}/f.ckpt", from_file)
    with proxied.open_writer(f"s3://{bucket}/w.ckpt", from_writer) as writer:
        writer.write(data)

    assert sum(from_file.calls) == sum(from_writer.calls) == len(data)


def test_download_progress_adds_up_to_the_size_with_a_retried_range(
    fault_proxy: FaultProxy, proxied: S3Store, bucket: str, tmp_path: Path
) -> None:
    data = payload(3 * CHUNK + 17, seed=5)
    url = f"s3://{bucket}/down.ckpt"
    proxied.upload_bytes(url, data)
    fault_proxy.add_fault("GetObject", "reset_mid_body", times=1)
    to_file, to_memory, into = Tally(), Tally(), Tally()

    proxied.download_file(url, tmp_path / "down.ckpt", to_file)
    assert proxied.download_bytes(url, to_memory) == data
    proxied.download_into(url, bytearray(len(data)), into)

    assert fault_proxy.injected == 1
    for tally in (to_file, to_memory, into):
        assert sum(tally.calls) == len(data)
        assert len(tally.calls) == 4


def test_a_failing_progress_callback_never_fails_the_transfer(proxied: S3Store, bucket: str) -> None:
    def broken(nbytes: int) -> None:
        raise RuntimeError("progress bar gone")

    proxied.upload_bytes(f"s3://{bucket}/x.ckpt", payload(CHUNK + 1), broken)
    assert proxied.download_bytes(f"s3://{bucket}/x.ckpt", broken) == payload(CHUNK + 1)
