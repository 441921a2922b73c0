"""Bad settings fail at construction, naming the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from s3_utils import S3ClientConfig, S3ConfigError, TransferConfig
from s3_utils.limits import GET_REQUESTS_PER_PREFIX_PER_S, PUT_REQUESTS_PER_PREFIX_PER_S


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size_MB": 4}, r"chunk_size_MB=4 .*5 to 5120 MiB"),
        ({"chunk_size_MB": 5121}, r"chunk_size_MB=5121 .*5 to 5120 MiB"),
        ({"chunk_size_MB": float("nan")}, r"chunk_size_MB=nan"),
        ({"max_concurrency": 0}, r"max_concurrency=0 .*>= 1"),
        ({"max_attempts": 0}, r"max_attempts=0 .*>= 1"),
        ({"retry_total_s": -1}, r"retry_total_s=-1 .*> 0"),
    ],
)
def test_transfer_config_rejects_out_of_range_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(S3ConfigError, match=message):
        TransferConfig(**kwargs)  # type: ignore[arg-type]


def test_config_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        TransferConfig(max_concurrency=0)


def test_client_config_repr_hides_secrets() -> None:
    config = S3ClientConfig(
        access_key_id="AKIAEXAMPLE", secret_access_key="s3cr3t-value", session_token="tok3n"
    )
    text = repr(config) + str(config)
    for secret in ("AKIAEXAMPLE", "s3cr3t-value", "tok3n"):
        assert secret not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint_url": "127.0.0.1:9000"}, "must start with http"),
        ({"addressing_style": "sideways"}, "addressing_style='sideways'"),
        ({"verify": "/no/such/bundle.pem"}, "no CA bundle file"),
        ({"connect_timeout": 0}, "connect_timeout=0"),
        ({"min_throughput_MiB_s": 0}, "min_throughput_MiB_s=0"),
        ({"max_pool_connections": 0}, "max_pool_connections=0"),
        ({"access_key_id": "only-the-id"}, "must be given together"),
        ({"put_requests_per_prefix_per_s": 0}, "put_requests_per_prefix_per_s=0"),
        ({"get_requests_per_prefix_per_s": -1.0}, "get_requests_per_prefix_per_s=-1.0"),
    ],
)
def test_client_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(S3ConfigError, match=message):
        S3ClientConfig(**kwargs)  # type: ignore[arg-type]


def test_the_per_prefix_request_rates_are_s3s_unless_set() -> None:
    assert S3ClientConfig().requests_per_prefix_per_s("PUT") == PUT_REQUESTS_PER_PREFIX_PER_S
    assert S3ClientConfig().requests_per_prefix_per_s("GET") == GET_REQUESTS_PER_PREFIX_PER_S
    emulated = S3ClientConfig(put_requests_per_prefix_per_s=10.0, get_requests_per_prefix_per_s=20.0)
    assert (emulated.requests_per_prefix_per_s("PUT"), emulated.requests_per_prefix_per_s("GET")) == (
        10.0,
        20.0,
    )


def test_from_env_reads_endpoint_region_and_profile() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://generic:1",
        "AWS_ENDPOINT_URL_S3": "http://s3-specific:2",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_PROFILE": "team",
    }
    config = S3ClientConfig.from_env(env)
    assert (config.endpoint_url, config.region, config.profile) == (
        "http://s3-specific:2",
        "eu-west-1",
        "team",
    )
    assert (
        S3ClientConfig.from_env({"AWS_ENDPOINT_URL": "http://generic:1"}).endpoint_url == "http://generic:1"
    )
    assert S3ClientConfig.from_env({}, region="us-west-2").region == "us-west-2"


def test_resolve_takes_a_whole_config_or_fields_never_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    whole = S3ClientConfig(endpoint_url="http://127.0.0.1:2")
    assert S3ClientConfig.resolve(whole) is whole
    assert S3ClientConfig.resolve(region="eu-west-1").endpoint_url == "http://127.0.0.1:1"
    assert S3ClientConfig.resolve(endpoint_url="http://127.0.0.1:3").endpoint_url == "http://127.0.0.1:3"
    with pytest.raises(S3ConfigError, match=r"either client_config or \['region'\], not both"):
        S3ClientConfig.resolve(whole, region="eu-west-1")
