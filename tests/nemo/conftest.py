from collections.abc import Iterator
from typing import Any

import pytest

from support.s3_objects import created_bucket


@pytest.fixture
def seed_bucket(s3_client: Any) -> Iterator[str]:
    """The bucket the seed YAML names (``s3://bucket/...``), created empty and removed afterwards."""
    with created_bucket(s3_client, "bucket") as name:
        yield name
