"""Inspect the test bucket directly (boto3 against moto), never through the code under test."""

from __future__ import annotations

from typing import Any


def object_keys(client: Any, bucket_name: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in ``bucket_name``, sorted."""
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)
