"""The shared S3 server fixture serves real HTTP on loopback."""

from __future__ import annotations

from typing import Any

from support.s3_server import MotoServer


def test_server_listens_on_loopback_and_round_trips(
    s3_server: MotoServer, s3_client: Any, bucket: str
) -> None:
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"hello")
    assert s3_client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"
