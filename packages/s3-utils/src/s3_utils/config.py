"""Configuration: where S3 is and how to talk to it (:class:`S3ClientConfig`), and how to move bytes
(:class:`TransferConfig`).

Both are frozen dataclasses validated on construction, so a bad value fails at start-up with a message
naming the field, the value and the allowed range, not in the middle of a save.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from s3_utils.errors import S3ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB
"""S3's smallest part (all but the last part of a multipart upload)."""
MAX_PART_SIZE = 5 * GiB
"""S3's largest part, and the largest single PUT."""
MAX_PARTS = 10_000
"""S3's limit on parts per multipart upload."""

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
        connect_timeout: seconds to wait for a TCP connection.
        read_timeout: seconds to wait for data on an open connection.
        max_pool_connections: HTTP connection pool size; None derives it from the transfer concurrency.
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
    read_timeout: float = 60.0
    max_pool_connections: int | None = None

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

    @property
    def endpoint_name(self) -> str:
        """The endpoint for messages: the URL, or ``AWS (<region>)``."""
        return self.endpoint_url or f"AWS ({self.region or 'default region'})"


@dataclass(frozen=True)
class TransferConfig:
    """How bytes move: part size, parallelism, retries and checksums.

    Attributes:
        chunk_size_MB: part size in MiB for multipart uploads and ranged downloads (5 to 5120).
        max_concurrency: requests in flight per transfer (>= 1); memory per streaming upload is about
            ``(max_concurrency + 1) * chunk_size``.
        max_attempts: attempts per request for transient failures (>= 1).
        retry_base_delay_s: first backoff ceiling; each retry doubles it, with full jitter.
        retry_max_delay_s: largest backoff between two attempts.
        retry_total_s: a request stops retrying once this much time has passed since its first attempt.
        connect_attempts: attempts when the endpoint refuses connections (a dead endpoint fails fast).
        checksum: send a CRC64NVME with every upload and verify downloads when the server returns one.
    """

    chunk_size_MB: float = 64
    max_concurrency: int = 10
    max_attempts: int = 10
    retry_base_delay_s: float = 0.1
    retry_max_delay_s: float = 5.0
    retry_total_s: float = 120.0
    connect_attempts: int = 3
    checksum: bool = True

    def __post_init__(self) -> None:
        size = self.chunk_size_MB
        if isinstance(size, bool) or not isinstance(size, int | float) or math.isnan(size):
            raise S3ConfigError(f"chunk_size_MB={size!r} is invalid: it must be a number of MiB")
        if not MIN_PART_SIZE <= size * MiB <= MAX_PART_SIZE:
            raise S3ConfigError(
                f"chunk_size_MB={size!r} is out of range: S3 parts must be 5 to 5120 MiB (5 MiB to 5 GiB)"
            )
        for name in ("max_concurrency", "max_attempts", "connect_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise S3ConfigError(f"{name}={value!r} is invalid: it must be an int >= 1")
        _positive("retry_base_delay_s", self.retry_base_delay_s)
        _positive("retry_max_delay_s", self.retry_max_delay_s)
        _positive("retry_total_s", self.retry_total_s)

    @property
    def chunk_size(self) -> int:
        """The part size in bytes."""
        return int(self.chunk_size_MB * MiB)

    def parts_for(self, size: int) -> int:
        """How many parts an object of ``size`` bytes takes (at least 1)."""
        return max(1, -(-size // self.chunk_size))

    def check_object_size(self, size: int) -> None:
        """Check that an object of ``size`` bytes fits S3's 10,000-part limit at this chunk size.

        Raises:
            S3ConfigError: naming the size, the part count, and a chunk size that would work.
        """
        parts = self.parts_for(size)
        if parts <= MAX_PARTS:
            return
        needed_mib = math.ceil(size / MAX_PARTS / MiB)
        if needed_mib * MiB > MAX_PART_SIZE:
            raise S3ConfigError(
                f"an object of {size} bytes is larger than S3's limit of 10,000 parts of 5 GiB"
            )
        raise S3ConfigError(
            f"an object of {size} bytes needs {parts} parts of chunk_size_MB={self.chunk_size_MB:g}, "
            f"over S3's limit of {MAX_PARTS}; use chunk_size_MB >= {needed_mib}"
        )
