"""Faults that last: a SlowDown storm, an endpoint outage, a server that stops answering.

Each test uses the default retry and timeout settings (only the part size is small), so it pins the
defaults: retries are bounded by time (minutes), not by a count of attempts.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from s3_utils import S3ClientConfig, S3EndpointError, S3Store, TransferConfig
from support.fault_proxy import FaultProxy
from support.s3_server import free_port

MiB = 1024 * 1024
STORM_S = 30.0
OUTAGE_S = 20.0
STALL_LIMIT_S = 55.0  # the proxy's silence ends here; botocore's default read timeout was 60 s


def default_store(endpoint: str) -> S3Store:
    """A store with every retry and timeout setting at its default, and S3's smallest part size."""
    return S3Store(S3ClientConfig.from_env(endpoint_url=endpoint), TransferConfig(chunk_size_MB=5))


@pytest.fixture
def stores(fault_proxy: FaultProxy) -> Iterator[tuple[S3Store, S3Store]]:
    with default_store(fault_proxy.url) as saver, default_store(fault_proxy.url) as loader:
        yield saver, loader


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def after(delay_s: float, action: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(delay_s, action)
    timer.start()
    return timer


def save_and_load_at_once(
    saver: S3Store, loader: S3Store, save_url: str, data: bytes, load_url: str
) -> bytes:
    with ThreadPoolExecutor(2) as pool:
        saved: Future[Any] = pool.submit(saver.upload_bytes, save_url, data)
        loaded: Future[bytearray] = pool.submit(loader.download_bytes, load_url)
        saved.result(timeout=240)
        return bytes(loaded.result(timeout=240))


@pytest.mark.slow
def test_a_30_second_slowdown_storm_during_a_save_and_a_load_is_ridden_out(
    fault_proxy: FaultProxy, stores: tuple[S3Store, S3Store], bucket: str
) -> None:
    saver, loader = stores
    data = payload(2 * 5 * MiB + 1)  # three parts, three ranges
    saver.upload_bytes(f"s3://{bucket}/previous.ckpt", data)
    fault_proxy.add_fault(action="slowdown")  # every request, until the storm ends
    storm = after(STORM_S, fault_proxy.clear_faults)
    try:
        loaded = save_and_load_at_once(
            saver, loader, f"s3://{bucket}/during-storm.ckpt", data, f"s3://{bucket}/previous.ckpt"
        )
    finally:
        storm.cancel()
    assert loaded == data
    assert loader.download_bytes(f"s3://{bucket}/during-storm.ckpt") == data
    slowed = [r for r in fault_proxy.requests if r.fault == "slowdown"]
    assert {r.operation for r in slowed} >= {"CreateMultipartUpload", "HeadObject"}
    assert len(slowed) > 10  # more failed attempts than the old per-request limit of 10


@pytest.mark.slow
def test_an_endpoint_outage_of_20_seconds_during_a_save_and_a_load_is_ridden_out(
    fault_proxy: FaultProxy, stores: tuple[S3Store, S3Store], bucket: str
) -> None:
    saver, loader = stores
    data = payload(2 * 5 * MiB + 1)
    saver.upload_bytes(f"s3://{bucket}/previous.ckpt", data)  # the endpoint has answered this process
    writer = saver.open_writer(f"s3://{bucket}/during-outage.ckpt")
    writer.write(data[: 5 * MiB + 1])  # one part on its way
    fault_proxy.stop()  # connections cut and refused: a load balancer or DNS blip
    outage = after(OUTAGE_S, fault_proxy.start)
    try:
        with ThreadPoolExecutor(1) as pool:
            loaded = pool.submit(loader.download_bytes, f"s3://{bucket}/previous.ckpt")
            with writer:
                writer.write(data[5 * MiB + 1 :])
            assert bytes(loaded.result(timeout=240)) == data
    finally:
        outage.join()
    assert loader.download_bytes(f"s3://{bucket}/during-outage.ckpt") == data


def test_a_wrong_endpoint_at_start_up_still_fails_within_seconds() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing ever listened there
    config = S3ClientConfig(
        endpoint_url=endpoint, region="us-east-1", access_key_id="a", secret_access_key="b"
    )
    started = time.monotonic()
    with (
        S3Store(config, TransferConfig(chunk_size_MB=5)) as store,
        pytest.raises(S3EndpointError, match=endpoint),
    ):
        store.upload_bytes("s3://bucket/key.ckpt", b"x")
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_a_silent_server_is_noticed_in_seconds_and_the_request_sent_again(
    fault_proxy: FaultProxy, stores: tuple[S3Store, S3Store], bucket: str
) -> None:
    saver, loader = stores
    url = f"s3://{bucket}/stalled.ckpt"
    fault_proxy.add_fault("PutObject", "stall", times=1, delay_s=STALL_LIMIT_S)
    fault_proxy.add_fault("GetObject", "stall", times=1, delay_s=STALL_LIMIT_S)
    started = time.monotonic()
    saver.upload_bytes(url, b"small checkpoint")
    assert loader.download_bytes(url) == b"small checkpoint"
    # both stalls were given up on by the client long before the server would have ended them
    assert time.monotonic() - started < STALL_LIMIT_S
    assert fault_proxy.count("PutObject") == 2
    assert fault_proxy.count("GetObject") == 2
