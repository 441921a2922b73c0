"""S3Error carries the operation, HTTP status and error code, so callers decide without more requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3_utils import S3AccessDeniedError, S3ClientConfig, S3NotFoundError, S3Store, TransferConfig
from support.fault_proxy import FaultProxy


@pytest.fixture
def proxied_store(fault_proxy: FaultProxy) -> Iterator[S3Store]:
    config = S3ClientConfig.from_env(endpoint_url=fault_proxy.url)
    with S3Store(config, TransferConfig(chunk_size_MB=5, max_concurrency=2)) as store:
        yield store


def test_a_missing_key_error_carries_operation_status_code_and_object(
    proxied_store: S3Store, bucket: str
) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        proxied_store.download_bytes(f"s3://{bucket}/nope.ckpt")
    error = caught.value
    assert (error.operation, error.status, error.code) == ("HeadObject", 404, "404")
    assert (error.bucket, error.key) == (bucket, "nope.ckpt")


def test_a_missing_bucket_error_carries_the_s3_code(proxied_store: S3Store) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        list(proxied_store.iter_objects("s3://no-such-bucket-here/run/"))
    assert (caught.value.operation, caught.value.status, caught.value.code) == (
        "ListObjectsV2",
        404,
        "NoSuchBucket",
    )


def test_access_denied_carries_status_and_code(
    fault_proxy: FaultProxy, proxied_store: S3Store, bucket: str
) -> None:
    fault_proxy.add_fault("PutObject", "access_denied")
    with pytest.raises(S3AccessDeniedError) as caught:
        proxied_store.upload_bytes(f"s3://{bucket}/k", b"x")
    assert (caught.value.operation, caught.value.status, caught.value.code) == (
        "PutObject",
        403,
        "AccessDenied",
    )


def test_exists_on_a_missing_key_is_one_head(
    fault_proxy: FaultProxy, proxied_store: S3Store, bucket: str
) -> None:
    proxied_store.upload_bytes(f"s3://{bucket}/run/last.ckpt", b"weights")  # the store has reached the bucket
    before = fault_proxy.counts()

    assert not proxied_store.exists(f"s3://{bucket}/run/step=9.ckpt")

    after = fault_proxy.counts()
    made = {op: after.get(op, 0) - before.get(op, 0) for op in after if after.get(op, 0) != before.get(op, 0)}
    assert made == {"HeadObject": 1}


def test_exists_still_names_a_missing_bucket(proxied_store: S3Store) -> None:
    with pytest.raises(S3NotFoundError, match="bucket 'no-such-bucket-here' does not exist"):
        proxied_store.exists("s3://no-such-bucket-here/k")
