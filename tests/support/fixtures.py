"""pytest fixtures shared by the layers that talk to S3. Import them in a layer's conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from support.fault_proxy import FaultProxy
from support.s3_server import MotoServer, new_bucket_name, s3_environment


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """One moto server process for the whole test session; AWS_* variables point at it."""
    server = MotoServer().start()
    saved = {name: os.environ.get(name) for name in s3_environment(server.endpoint_url)}
    saved["AWS_PROFILE"] = os.environ.pop("AWS_PROFILE", None)
    os.environ.update(s3_environment(server.endpoint_url))
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_client(s3_server: MotoServer) -> Any:
    """A plain boto3 client on the test server, for set-up and inspection (not the code under test)."""
    return s3_server.client()


@pytest.fixture
def bucket(s3_server: MotoServer, s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket for one test; emptied and deleted afterwards so the server stays small."""
    name = new_bucket_name()
    s3_client.create_bucket(Bucket=name)
    yield name
    remove_bucket(s3_client, name)


def remove_bucket(s3_client: Any, name: str) -> None:
    """Empty ``name`` (objects and incomplete multipart uploads) and delete it."""
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3_client.delete_objects(Bucket=name, Delete={"Objects": keys})
    for upload in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3_client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def fault_proxy(s3_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the test server; point a client's endpoint at ``.url``."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy
