from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3_utils import S3ClientConfig, S3Store, TransferConfig
from support.fixtures import bucket, fault_proxy, s3_client, s3_server  # noqa: F401

SMALL_CHUNK_MB = 5
CHUNK = SMALL_CHUNK_MB * 1024 * 1024


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[S3Store]:
    """A store with S3's smallest part size (5 MiB), so multipart paths run with small objects."""
    request.getfixturevalue("s3_server")  # starts the server and points AWS_* at it
    with S3Store(
        S3ClientConfig.from_env(), TransferConfig(chunk_size_MB=SMALL_CHUNK_MB, max_concurrency=4)
    ) as s3_store:
        yield s3_store
