"""Bad input fails fast with an error that names the problem and what to check; secrets never leak."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from s3_utils import (
    S3AccessDeniedError,
    S3ClientConfig,
    S3ConfigError,
    S3EndpointError,
    S3NotFoundError,
    S3Store,
    TransferConfig,
)
from support.fault_proxy import FaultProxy
from support.s3_server import TEST_SECRET_KEY, MotoServer, free_port

SMALL = TransferConfig(chunk_size_MB=5, max_concurrency=2)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.upload_bytes("s3://no-such-bucket-here/k", b"x"),
        lambda s: s.download_bytes("s3://no-such-bucket-here/k"),
        lambda s: s.head("s3://no-such-bucket-here/k"),
        lambda s: list(s.iter_objects("s3://no-such-bucket-here/")),
        lambda s: s.exists("s3://no-such-bucket-here/k"),
    ],
    ids=["upload", "download", "head", "list", "exists"],
)
def test_missing_bucket_is_named(store: S3Store, call: Any) -> None:
    with pytest.raises(S3NotFoundError, match=r"bucket 'no-such-bucket-here' does not exist") as caught:
        call(store)
    assert store.client_config.endpoint_url in str(caught.value)


def test_missing_key_is_named_and_is_a_file_not_found(store: S3Store, bucket: str) -> None:
    with pytest.raises(FileNotFoundError, match=rf"s3://{bucket}/nope.ckpt.*no such object"):
        store.download_bytes(f"s3://{bucket}/nope.ckpt")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/local/path.ckpt", "not an S3 URL"),
        ("s3://Bad_Bucket/k", "bucket name 'Bad_Bucket'"),
        ("s3://bucket-only", "names no object"),
        ("s3://bucket/dir/", "names no object"),
    ],
)
def test_malformed_url_fails_before_any_request(store: S3Store, url: str, message: str) -> None:
    with pytest.raises(S3ConfigError, match=message):
        store.upload_bytes(url, b"x")


def test_dead_endpoint_fails_within_seconds_naming_it() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = S3ClientConfig(
        endpoint_url=endpoint, region="us-east-1", access_key_id="a", secret_access_key="b"
    )
    started = time.monotonic()
    with S3Store(config, SMALL) as store, pytest.raises(S3EndpointError, match=rf"{endpoint}.*running"):
        store.download_bytes("s3://bucket/key")
    assert time.monotonic() - started < 5


def test_no_credentials_says_where_to_set_them(
    s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # clients are cached per config and process; a config no other test uses gets a fresh one
    with (
        S3Store(S3ClientConfig.from_env(read_timeout=59), SMALL) as store,
        pytest.raises(S3AccessDeniedError, match=r"no AWS credentials found.*AWS_ACCESS_KEY_ID"),
    ):
        store.upload_bytes("s3://some-bucket/k", b"x")


@pytest.fixture(scope="module")
def authenticating_server(s3_server: MotoServer) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A moto server that checks signatures: its first 4 calls (set-up) are free, the rest are not.

    (``s3_server`` only provides the AWS_* test credentials in the environment.)
    """
    with pytest.MonkeyPatch.context() as mp:  # only this server's process sees the variable
        mp.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
        server = MotoServer().start()
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name="us-east-1")
        iam.create_user(UserName="trainer")
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        policy = {"Effect": "Allow", "Action": ["s3:CreateBucket", "s3:GetObject", "s3:ListBucket"]}
        iam.put_user_policy(
            UserName="trainer",
            PolicyName="read-only",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{**policy, "Resource": "*"}]}),
        )
        server.client().create_bucket(Bucket="guarded")
        yield server, {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"secret_access_key": "wrong-secret"}, r"SignatureDoesNotMatch.*secret access key is wrong"),
        ({"access_key_id": "AKIAUNKNOWN", "secret_access_key": "x"}, r"InvalidAccessKeyId.*access key id"),
        ({}, r"access denied; check that the credentials' policy allows s3:PutObject"),
    ],
    ids=["wrong-secret", "unknown-key", "not-allowed"],
)
def test_rejected_credentials_are_explained(
    authenticating_server: tuple[MotoServer, dict[str, str]], credentials: dict[str, str], message: str
) -> None:
    server, valid = authenticating_server
    config = S3ClientConfig(endpoint_url=server.endpoint_url, region="us-east-1", **{**valid, **credentials})
    with S3Store(config, SMALL) as store, pytest.raises(S3AccessDeniedError, match=message) as caught:
        store.upload_bytes("s3://guarded/k", b"x")
    assert isinstance(caught.value, PermissionError)
    assert "guarded/k" in str(caught.value)


def test_secrets_never_appear_in_logs_reprs_or_errors(
    fault_proxy: FaultProxy, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "a-very-secret-key-value"
    token = "a-session-token-value"
    config = S3ClientConfig(
        endpoint_url=fault_proxy.url,
        region="us-east-1",
        access_key_id="testing-access-key",
        secret_access_key=secret,
        session_token=token,
    )
    fault_proxy.add_fault(action="slowdown", probability=0.5, seed=1)
    messages = []
    with (
        caplog.at_level(logging.DEBUG),
        S3Store(config, TransferConfig(chunk_size_MB=5, retry_base_delay_s=0.001, max_attempts=30)) as store,
    ):
        store.upload_bytes(f"s3://{bucket}/k", b"payload" * 1000)
        store.download_bytes(f"s3://{bucket}/k")
        for failing in (
            lambda: store.head(f"s3://{bucket}/missing"),
            lambda: store.head("s3://no-such-bucket-x/k"),
        ):
            with pytest.raises(S3NotFoundError) as caught:
                failing()
            messages.append(str(caught.value))
        messages += [repr(store), repr(config), str(config)]
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the retries were logged
    for text in (caplog.text, *messages):
        assert secret not in text
        assert token not in text
        assert TEST_SECRET_KEY not in text
