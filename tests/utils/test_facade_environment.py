"""S3Utils reads the environment at every call: a changed endpoint is reached, not a cached one."""

from __future__ import annotations

import pytest

from s3_utils import S3Utils
from support.s3_server import MotoServer, running_moto_server


def point_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)


@pytest.mark.slow
def test_a_changed_aws_endpoint_url_is_seen_by_the_next_call(
    s3_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_server.client().put_object(Bucket=bucket, Key="run/first.ckpt", Body=b"on the first server")
    with running_moto_server() as second:
        second.client().create_bucket(Bucket=bucket)
        second.client().put_object(Bucket=bucket, Key="run/second.ckpt", Body=b"on the second server")

        point_at(monkeypatch, s3_server.endpoint_url)
        assert S3Utils.s3_path_exists(f"s3://{bucket}/run/first.ckpt")
        assert not S3Utils.s3_path_exists(f"s3://{bucket}/run/second.ckpt")

        point_at(monkeypatch, second.endpoint_url)
        assert S3Utils.s3_path_exists(f"s3://{bucket}/run/second.ckpt")
        assert not S3Utils.s3_path_exists(f"s3://{bucket}/run/first.ckpt")
        data = S3Utils.download_s3_file_to_stream(f"s3://{bucket}/run/second.ckpt", chunk_size_MB=5)
        assert data.read() == b"on the second server"
