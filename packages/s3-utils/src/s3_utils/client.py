"""One boto3 S3 client per (configuration, process), shared by every thread.

boto3 clients are thread-safe; creating one is slow (it loads service models) and each holds its own
connection pool, so we cache them. A forked child must never reuse its parent's pooled sockets (two
processes reading one TCP stream corrupts both), so the cache is emptied in the child after a fork.

Upload bodies are sent as ``UNSIGNED-PAYLOAD``: the CRC64NVME each upload carries covers the bytes.
Botocore's own retries are turned off: :mod:`s3_utils.retry` owns the retry policy, per request.
Each request's read timeout is sized to the bytes it moves (:meth:`S3ClientConfig.read_timeout_for`),
so a silent server is noticed in seconds on a small request without cutting off a large one.

Credentials come from botocore's chain when the config names none; the chain reads the environment
when the client is made. The cache key therefore includes a digest of the variables the chain reads,
so a process that changes ``AWS_ACCESS_KEY_ID`` (or the profile files) gets a client that uses them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from s3_utils.config import S3ClientConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_POOL_HEADROOM = 4
"""Connections beyond the transfer concurrency, for HEAD/list calls made while parts are in flight."""

_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)

_lock = threading.Lock()
_clients: dict[tuple[S3ClientConfig, int, str], S3Client] = {}
_owner_pid = os.getpid()


def _forget_after_fork() -> None:
    global _lock, _owner_pid
    _lock = threading.Lock()  # the parent may have held it at fork time
    _clients.clear()
    _owner_pid = os.getpid()


os.register_at_fork(after_in_child=_forget_after_fork)

_TOKEN_HEADER = re.compile(r"(x-amz-security-token['\"]?\s*[:=]\s*b?['\"]?)[^'\",}\s]+", re.IGNORECASE)


class _RedactSessionToken(logging.Filter):
    """botocore's DEBUG log prints request headers, session token included; blank the token out."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "security-token" in message.lower():
            record.msg = _TOKEN_HEADER.sub(r"\1<redacted>", message)
            record.args = ()
        return True


for _name in ("botocore.endpoint", "botocore.auth", "botocore.hooks", "botocore.parsers"):
    logging.getLogger(_name).addFilter(_RedactSessionToken())


def pool_size(config: S3ClientConfig, max_concurrency: int) -> int:
    """The connection pool size: the configured one, or the transfer concurrency plus headroom."""
    if config.max_pool_connections is not None:
        return config.max_pool_connections
    return max(10, max_concurrency + DEFAULT_POOL_HEADROOM)


def get_client(config: S3ClientConfig, max_pool_connections: int) -> S3Client:
    """The shared client for ``config`` in this process, created on first use.

    Args:
        config: where and how to connect.
        max_pool_connections: connection pool size (see :func:`pool_size`).

    Returns:
        A thread-safe boto3 S3 client with botocore retries disabled.
    """
    cache_key = (config, max_pool_connections, credential_environment())
    with _lock:
        if _owner_pid != os.getpid():  # a fork without the hook (should not happen); be safe anyway
            _forget_after_fork()
        client = _clients.get(cache_key)
        if client is None:
            client = _new_client(config, max_pool_connections)
            _clients[cache_key] = client
        return client


def credential_environment() -> str:
    """A digest of the environment variables botocore's credential chain reads (never the values)."""
    digest = hashlib.sha256()
    for name in _CREDENTIAL_VARIABLES:
        digest.update(f"{name}={os.environ.get(name, '')}\0".encode())
    return digest.hexdigest()


def _bytes_moved(params: dict[str, Any]) -> int:
    """The bytes a request sends or receives, from its API parameters (0 if none)."""
    body = params.get("Body")
    if isinstance(body, bytes | bytearray | memoryview):
        return memoryview(body).nbytes
    if body is not None and hasattr(body, "seek") and hasattr(body, "tell"):
        position = int(body.tell())
        size = int(body.seek(0, os.SEEK_END)) - position
        body.seek(position)
        return size
    byte_range = params.get("Range")
    if isinstance(byte_range, str) and byte_range.startswith("bytes="):
        first, _, last = byte_range[len("bytes=") :].partition("-")
        if first.isdigit() and last.isdigit():
            return int(last) - int(first) + 1
    return int(params.get("MpuObjectSize") or 0)


def _sized_read_timeout(config: S3ClientConfig) -> Any:
    def size_read_timeout(params: dict[str, Any], **kwargs: Any) -> None:
        context = kwargs.get("context")
        if context is not None:
            context["read_timeout"] = config.read_timeout_for(_bytes_moved(params))

    return size_read_timeout


def _new_client(config: S3ClientConfig, max_pool_connections: int) -> S3Client:
    session = boto3.session.Session(
        profile_name=config.profile,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        aws_session_token=config.session_token,
        region_name=config.region,
    )
    botocore_config = Config(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=max_pool_connections,
        retries={"total_max_attempts": 1, "mode": "standard"},
        # Bodies are not SHA-256-signed: every upload carries its CRC64NVME, which S3 checks, so the
        # hash would be a second pass over every byte (botocore signs bodies on any http:// endpoint
        # unless told not to, and awscrt's signer holds the GIL for a whole part while it hashes).
        s3={"addressing_style": config.addressing_style, "payload_signing_enabled": False},
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = session.client(
        "s3", endpoint_url=config.endpoint_url, verify=config.verify, config=botocore_config
    )
    # Newer botocore (1.43 here) reads a per-request read timeout from the request context; older
    # releases (1.41, NeMo's stack) ignore it and use read_timeout for every request.
    client.meta.events.register("before-parameter-build.s3", _sized_read_timeout(config))
    return client
