"""Look into and clean up a test bucket with a plain boto3 client, never through the code under test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


def object_keys(s3_client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in ``bucket``, sorted, over as many listing pages as there are.

    Args:
        s3_client: A boto3 S3 client on the test server.
        bucket: The bucket to list.
        prefix: Only keys that start with it.

    Returns:
        The keys, sorted.
    """
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def remove_bucket(s3_client: Any, bucket: str) -> None:
    """Empty ``bucket`` (objects and incomplete multipart uploads) and delete it.

    Args:
        s3_client: A boto3 S3 client on the test server.
        bucket: The bucket to remove.
    """
    keys = object_keys(s3_client, bucket)
    for start in range(0, len(keys), DELETE_BATCH):
        batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        s3_client.delete_objects(Bucket=bucket, Delete={"Objects": batch})
    for upload in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3_client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    s3_client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def created_bucket(s3_client: Any, bucket: str) -> Iterator[str]:
    """Create ``bucket`` empty, yield its name, then remove it (see :func:`remove_bucket`).

    Args:
        s3_client: A boto3 S3 client on the test server.
        bucket: The name to create.

    Returns:
        A context manager that yields ``bucket``.
    """
    s3_client.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        remove_bucket(s3_client, bucket)
