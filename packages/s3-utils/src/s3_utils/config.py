"""Configuration: where S3 is and how to talk to it (:class:`S3ClientConfig`), and how to move bytes
(:class:`TransferConfig`).

Both are frozen dataclasses validated on construction, so a bad value fails at start-up with a message
naming the field, the value and the allowed range, not in the middle of a save.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from s3_utils.errors import S3ConfigError
from s3_utils.limits import (
    GET_REQUESTS_PER_PREFIX_PER_S,
    PUT_REQUESTS_PER_PREFIX_PER_S,
    MiB,
    RequestClass,
    check_part_size_MB,
)

AddressingStyle = Literal["path", "virtual", "auto"]
_ADDRESSING_STYLES = ("path", "virtual", "auto")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise S3ConfigError(f"{name}={value!r} is invalid: it must be a number > 0")


@dataclass(frozen=True)
class S3ClientConfig:
    """Where the S3 endpoint is and how the client connects to it.

    Credentials left as None are found by botocore's usual chain (environment, profile, instance or
    container role), which also refreshes expiring ones. They never appear in ``repr``.

    Attributes:
        endpoint_url: e.g. ``http://127.0.0.1:9000`` for an S3-compatible server; None for AWS.
        region: AWS region, e.g. ``us-east-1``.
        profile: a named profile from the AWS config files.
        access_key_id: explicit access key id (prefer the environment or a profile).
        secret_access_key: explicit secret key.
        session_token: explicit session token for temporary credentials.
        addressing_style: ``path`` (``host/bucket/key``), ``virtual`` (``bucket.host/key``) or ``auto``.
        verify: TLS verification: True, False, or the path of a CA bundle.
        connect_timeout: seconds to wait for a TCP connection, and the longest pause allowed while
            sending a request's body.
        read_timeout: the longest silence allowed from the server on a request that moves no data
            (HEAD, listing, delete); a request that moves ``n`` bytes (a part, a range, a completion
            of an ``n``-byte object) allows ``read_timeout + n / (min_throughput_MiB_s MiB/s)``. Past
            it the request is treated as stalled, abandoned and retried, so a silent server costs
            seconds, not botocore's default minute.
        min_throughput_MiB_s: the slowest rate, in MiB/s, at which a server is expected to handle a
            request's bytes; sizes the read timeout of large requests (see ``read_timeout``).
        max_pool_connections: HTTP connection pool size; None derives it from the transfer concurrency.
        put_requests_per_prefix_per_s: write requests (PUT/COPY/POST/DELETE) the store serves per
            second per key prefix; S3's own figure by default. A job writing under one prefix from
            many ranks paces its requests to its fair share of it
            (:meth:`~s3_utils.store.S3Store.share_prefix`); describe here an S3-compatible store with
            other limits.
        get_requests_per_prefix_per_s: read requests (GET/HEAD) the store serves per second per key
            prefix; S3's own figure by default.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    addressing_style: AddressingStyle = "auto"
    verify: bool | str = True
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    min_throughput_MiB_s: float = 20.0
    max_pool_connections: int | None = None
    put_requests_per_prefix_per_s: float = PUT_REQUESTS_PER_PREFIX_PER_S
    get_requests_per_prefix_per_s: float = GET_REQUESTS_PER_PREFIX_PER_S

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and not self.endpoint_url.startswith(("http://", "https://")):
            raise S3ConfigError(
                f"endpoint_url={self.endpoint_url!r} is invalid: it must start with http:// or https://"
            )
        if self.addressing_style not in _ADDRESSING_STYLES:
            raise S3ConfigError(
                f"addressing_style={self.addressing_style!r} is invalid: use one of {_ADDRESSING_STYLES}"
            )
        if isinstance(self.verify, str) and not os.path.isfile(self.verify):
            raise S3ConfigError(
                f"verify={self.verify!r}: no CA bundle file there; pass True, False or an existing path"
            )
        _positive("connect_timeout", self.connect_timeout)
        _positive("read_timeout", self.read_timeout)
        _positive("min_throughput_MiB_s", self.min_throughput_MiB_s)
        _positive("put_requests_per_prefix_per_s", self.put_requests_per_prefix_per_s)
        _positive("get_requests_per_prefix_per_s", self.get_requests_per_prefix_per_s)
        if self.max_pool_connections is not None and (
            not isinstance(self.max_pool_connections, int) or self.max_pool_connections < 1
        ):
            raise S3ConfigError(
                f"max_pool_connections={self.max_pool_connections!r} is invalid: it must be an int >= 1"
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise S3ConfigError(
                "access_key_id and secret_access_key must be given together (or both left to the "
                "environment / profile)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> S3ClientConfig:
        """Build a config from the ``AWS_*`` environment variables.

        Reads ``AWS_ENDPOINT_URL_S3`` (then ``AWS_ENDPOINT_URL``), ``AWS_REGION`` (then
        ``AWS_DEFAULT_REGION``) and ``AWS_PROFILE``. Credentials are left to botocore's chain.

        Args:
            environ: the variables to read; ``os.environ`` by default.
            **overrides: fields to set explicitly, winning over the environment.

        Returns:
            The validated config.

        Raises:
            S3ConfigError: if a value is invalid.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            "profile": env.get("AWS_PROFILE") or None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def resolve(
        cls,
        client_config: S3ClientConfig | None = None,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
    ) -> S3ClientConfig:
        """The config a plugin's constructor arguments describe: a whole config, or a few fields.

        Args:
            client_config: a complete config; returned as it is.
            endpoint_url: set explicitly instead of from the environment.
            region: set explicitly instead of from the environment.
            profile: set explicitly instead of from the environment.

        Returns:
            ``client_config``, or :meth:`from_env` with the given fields winning.

        Raises:
            S3ConfigError: if ``client_config`` comes with one of the fields (which would be ignored),
                or a value is invalid.
        """
        overrides = {"endpoint_url": endpoint_url, "region": region, "profile": profile}
        given = {name: value for name, value in overrides.items() if value is not None}
        if client_config is None:
            return cls.from_env(None, **given)
        if given:
            raise S3ConfigError(
                f"pass either client_config or {sorted(given)}, not both; put those settings in the "
                "S3ClientConfig"
            )
        return client_config

    def requests_per_prefix_per_s(self, request_class: RequestClass) -> float:
        """The requests of ``request_class`` (``"PUT"`` or ``"GET"``) the store serves per second per
        key prefix."""
        if request_class == "PUT":
            return self.put_requests_per_prefix_per_s
        return self.get_requests_per_prefix_per_s

    def read_timeout_for(self, nbytes: int) -> float:
        """The read timeout of a request that moves ``nbytes`` bytes (see ``read_timeout``)."""
        return self.read_timeout + nbytes / (self.min_throughput_MiB_s * MiB)

    @property
    def endpoint_name(self) -> str:
        """The endpoint for messages: the URL, or ``AWS (<region>)``."""
        return self.endpoint_url or f"AWS ({self.region or 'default region'})"


@dataclass(frozen=True)
class TransferConfig:
    """How bytes move: part size, parallelism, retries and checksums.

    Attributes:
        chunk_size_MB: part size in MiB for multipart uploads and ranged downloads (5 to 5120). A
            streaming upload doubles its part size every 900 parts (see :mod:`s3_utils.part_sizes`), so
            any object up to S3's 5 TiB fits in 10,000 parts whatever this is.
        max_concurrency: requests in flight per transfer (>= 1); memory per streaming upload is about
            ``(max_concurrency + 1) * part size``.
        max_attempts: an optional cap on attempts per request (>= 1); None: bounded by time only.
        retry_base_delay_s: first backoff ceiling; each retry doubles it, with full jitter.
        retry_max_delay_s: largest backoff between two attempts.
        retry_total_s: a request retries transient failures (throttling, 5xx, stalls, cut or refused
            connections to an endpoint that answered before) until this much time has passed since its
            first attempt, so a storm or an outage of a few minutes slows a save down but does not fail
            it. Errors retrying cannot fix (missing bucket or key, access denied, bad credentials, a
            changed object) are raised at once.
        connect_attempts: attempts when an endpoint that never answered this process refuses
            connections (a wrong endpoint at start-up fails within a second).
        checksum: send a CRC64NVME with every upload and verify downloads when the server returns one.
        adaptive_request_rate: after a 503 SlowDown, send fewer requests to that key prefix instead of
            retrying at the same rate: a rate limit per prefix and request class, learnt from S3's
            answers and shared by every thread of the process and the processes it starts
            (:mod:`s3_utils.request_rate`); where a writer knows who shares its prefix it also paces
            to that share from the first request (:meth:`~s3_utils.store.S3Store.share_prefix`). It
            costs a few microseconds per request while neither binds.
    """

    chunk_size_MB: float = 64
    max_concurrency: int = 10
    max_attempts: int | None = None
    retry_base_delay_s: float = 0.1
    retry_max_delay_s: float = 5.0
    retry_total_s: float = 300.0
    connect_attempts: int = 3
    checksum: bool = True
    adaptive_request_rate: bool = True

    def __post_init__(self) -> None:
        check_part_size_MB(self.chunk_size_MB)
        for name in ("max_concurrency", "max_attempts", "connect_attempts"):
            value = getattr(self, name)
            if name == "max_attempts" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise S3ConfigError(f"{name}={value!r} is invalid: it must be an int >= 1")
        _positive("retry_base_delay_s", self.retry_base_delay_s)
        _positive("retry_max_delay_s", self.retry_max_delay_s)
        _positive("retry_total_s", self.retry_total_s)
        for name in ("checksum", "adaptive_request_rate"):
            if not isinstance(getattr(self, name), bool):
                raise S3ConfigError(f"{name}={getattr(self, name)!r} is invalid: it must be True or False")

    @property
    def chunk_size(self) -> int:
        """The part size in bytes."""
        return int(self.chunk_size_MB * MiB)
