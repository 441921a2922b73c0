"""pytest fixtures shared by every layer's tests, loaded once as a plugin by ``tests/conftest.py``.

Only the standard library and pytest are imported at module level, so the plugin loads in every nox
session (the dirpath one has no boto3, moto or s3_utils); a fixture imports what it needs when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from support.fault_proxy import FaultProxy
from support.s3_objects import created_bucket, remove_bucket
from support.s3_server import MotoServer, new_bucket_name, s3_environment

if TYPE_CHECKING:
    from s3_utils import S3Store
    from support.doc_examples import Block


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
def bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket for one test; emptied and deleted afterwards so the server stays small."""
    with created_bucket(s3_client, new_bucket_name()) as name:
        yield name


@pytest.fixture
def store(s3_server: MotoServer) -> Iterator[S3Store]:
    """An S3Store on the test server with S3's smallest part size (see ``support.stores``)."""
    from support.stores import small_store

    with small_store() as s3_store:
        yield s3_store


@pytest.fixture
def fault_proxy(s3_server: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the test server; point a client's endpoint at ``.url``."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


@pytest.fixture
def buckets_for(s3_server: MotoServer, s3_client: Any) -> Iterator[Callable[[Block], None]]:
    """Creates the buckets a documentation example names (``block.buckets``); removes them afterwards."""
    made: list[str] = []

    def create(block: Block) -> None:
        for name in sorted(block.buckets):
            s3_client.create_bucket(Bucket=name)
            made.append(name)

    yield create
    for name in made:
        remove_bucket(s3_client, name)
