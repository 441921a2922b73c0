from collections.abc import Iterator
from typing import Any

import pytest

from support.fixtures import bucket, s3_client, s3_server  # noqa: F401


@pytest.fixture
def seed_bucket(s3_client: Any) -> Iterator[str]:  # noqa: F811
    """The bucket the seed YAML names (``s3://bucket/...``), created empty and removed afterwards."""
    name = "bucket"
    s3_client.create_bucket(Bucket=name)
    yield name
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3_client.delete_objects(Bucket=name, Delete={"Objects": keys})
    for upload in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3_client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3_client.delete_bucket(Bucket=name)
