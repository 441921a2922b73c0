from collections.abc import Iterator
from typing import Any

import pytest

from support.fixtures import bucket, remove_bucket, s3_client, s3_server  # noqa: F401


@pytest.fixture
def seed_bucket(s3_client: Any) -> Iterator[str]:  # noqa: F811
    """The bucket the seed YAML names (``s3://bucket/...``), created empty and removed afterwards."""
    name = "bucket"
    s3_client.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3_client, name)
