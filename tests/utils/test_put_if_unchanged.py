"""``S3Store.put_if_unchanged``: a write that refuses to replace a version it did not read."""

from __future__ import annotations

import pytest

from s3_utils import S3ObjectChangedError, S3Store


def test_put_if_unchanged_creates_once_and_replaces_only_the_version_it_read(
    store: S3Store, bucket: str
) -> None:
    url = f"s3://{bucket}/commit"
    first = store.put_if_unchanged(url, b"v1", expected_etag=None)
    assert store.head(url).etag == first
    with pytest.raises(S3ObjectChangedError, match="exists now: another writer"):
        store.put_if_unchanged(url, b"other job", expected_etag=None)

    second = store.put_if_unchanged(url, b"v2", expected_etag=first)
    with pytest.raises(S3ObjectChangedError, match="no longer the version"):
        store.put_if_unchanged(url, b"stale writer", expected_etag=first)
    assert store.head(url).etag == second
    assert store.download_bytes(url) == b"v2"
