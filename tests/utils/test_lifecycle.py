"""Threads are owned and stopped; a forked child never reuses its parent's client or workers."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from s3_utils import S3ClientConfig, S3Store, TransferConfig
from s3_utils.client import get_client
from support.stores import small_store


def s3_utils_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("s3-utils")]


def test_close_stops_every_worker_thread(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/a", b"x" * (6 * 1024 * 1024))
    store.download_bytes(f"s3://{bucket}/a")
    assert s3_utils_threads()
    store.close()
    assert s3_utils_threads() == []


def test_one_client_per_config_shared_across_stores(s3_server: Any) -> None:
    config = S3ClientConfig.from_env()
    with (
        S3Store(config, TransferConfig(max_concurrency=4)) as a,
        S3Store(config, TransferConfig(max_concurrency=4)) as b,
    ):
        assert a.client is b.client


def _child_round_trip(bucket: str, parent_client_id: int, results: Any) -> None:
    with small_store(max_concurrency=2) as store:
        store.upload_bytes(f"s3://{bucket}/from-child", b"child bytes" * 1000000)
        fresh = id(get_client(store.client_config, 10)) != parent_client_id
        results.put((fresh, bytes(store.download_bytes(f"s3://{bucket}/from-child")[:11])))


def test_forked_child_gets_its_own_client_and_workers(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/warm", b"x" * (6 * 1024 * 1024))  # parent has pooled connections
    parent_client = get_client(S3ClientConfig.from_env(), 10)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child_round_trip, args=(bucket, id(parent_client), results))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert results.get(timeout=5) == (True, b"child bytes")
    assert store.download_bytes(f"s3://{bucket}/warm")[:1] == b"x"  # the parent's pool still works
