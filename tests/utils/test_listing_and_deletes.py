"""Listing streams pages; deletes batch 1000 keys per request; exists() understands directories."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from s3_utils import S3Store
from support.fault_proxy import FaultProxy
from support.stores import small_store


def put_many(s3_client: Any, bucket: str, prefix: str, count: int) -> set[str]:
    keys = {f"{prefix}{i:05d}" for i in range(count)}
    for key in keys:
        s3_client.put_object(Bucket=bucket, Key=key, Body=b"")
    return keys


@pytest.mark.slow
def test_listing_and_delete_prefix_across_more_than_1000_keys(
    fault_proxy: FaultProxy, bucket: str, s3_client: Any
) -> None:
    keys = put_many(s3_client, bucket, "run/ckpt-", 1003)
    s3_client.put_object(Bucket=bucket, Key="other/keep", Body=b"k")
    with small_store(fault_proxy.url) as store:
        listed = store.iter_objects(f"s3://{bucket}/run/")
        first = next(listed)  # a generator: the first page is usable before the next is fetched
        assert first.key in keys
        assert fault_proxy.count("ListObjectsV2") == 1
        assert {first.key} | {info.key for info in listed} == keys
        assert fault_proxy.count("ListObjectsV2") == 2

        assert store.delete_prefix(f"s3://{bucket}/run/") == 1003
        assert fault_proxy.count("DeleteObjects") == 2  # 1000 + 3
        assert list(store.iter_objects(f"s3://{bucket}/run/")) == []
        assert [info.key for info in store.iter_objects(f"s3://{bucket}/")] == ["other/keep"]


def test_iter_objects_reports_size_and_etag(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/a/b.ckpt", b"12345")
    (info,) = store.iter_objects(f"s3://{bucket}/a")
    assert (info.url, info.size) == (f"s3://{bucket}/a/b.ckpt", 5)
    assert info.etag == store.head(info.url).etag


def test_exists_exact_key_and_directory(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/run/ckpt/last.ckpt", b"x")
    assert store.exists(f"s3://{bucket}/run/ckpt/last.ckpt")
    assert not store.exists(f"s3://{bucket}/run/ckpt/last")
    assert not store.exists(f"s3://{bucket}/run/ckpt")
    assert store.exists(f"s3://{bucket}/run/ckpt", match_directory=True)
    assert store.exists(f"s3://{bucket}/run/ckpt/", match_directory=True)
    assert not store.exists(f"s3://{bucket}/run/ck", match_directory=True)  # not a directory boundary


def test_delete_removes_one_object(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/a", b"1")
    store.upload_bytes(f"s3://{bucket}/ab", b"2")
    store.delete(f"s3://{bucket}/a")
    assert [i.key for i in store.iter_objects(f"s3://{bucket}/")] == ["ab"]


def test_delete_prefix_refuses_a_whole_bucket(store: S3Store, bucket: str) -> None:
    store.upload_bytes(f"s3://{bucket}/a", b"1")
    with pytest.raises(ValueError, match="whole bucket"):
        store.delete_prefix(f"s3://{bucket}/")
    assert store.exists(f"s3://{bucket}/a")


def test_abort_incomplete_uploads_respects_age_and_prefix(
    store: S3Store, bucket: str, s3_client: Any
) -> None:
    s3_client.create_multipart_upload(Bucket=bucket, Key="run/a")
    s3_client.create_multipart_upload(Bucket=bucket, Key="other/b")
    # moto reports every upload as initiated in 2010, so "recent" here means "within a century"
    assert store.abort_incomplete_uploads(f"s3://{bucket}/run/", older_than=timedelta(days=36500)) == 0
    assert store.abort_incomplete_uploads(f"s3://{bucket}/run/", older_than=timedelta(0)) == 1
    remaining = [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert remaining == ["other/b"]
