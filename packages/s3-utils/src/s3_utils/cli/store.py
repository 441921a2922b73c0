"""Build the :class:`~s3_utils.S3Store` a command uses from the global options and the environment."""

from __future__ import annotations

import argparse

from s3_utils import S3ClientConfig, S3Store, TransferConfig


def client_config(args: argparse.Namespace) -> S3ClientConfig:
    """The client config: the ``AWS_*`` environment, overridden by ``--endpoint-url/--region/--profile``.

    Raises:
        S3ConfigError: if a value is invalid (e.g. an endpoint without ``http://``).
    """
    return S3ClientConfig.resolve(
        endpoint_url=getattr(args, "endpoint_url", None),
        region=getattr(args, "region", None),
        profile=getattr(args, "profile", None),
    )


def open_store(
    args: argparse.Namespace, chunk_size_MB: float | None = None, max_concurrency: int | None = None
) -> S3Store:
    """A store for one command; the caller closes it (it is a context manager).

    Args:
        args: the parsed command line (global options).
        chunk_size_MB: part size, or None for the library default.
        max_concurrency: requests in flight per transfer, or None for the library default.

    Raises:
        S3ConfigError: if a value is invalid.
    """
    defaults = TransferConfig()
    transfer = TransferConfig(
        chunk_size_MB=defaults.chunk_size_MB if chunk_size_MB is None else chunk_size_MB,
        max_concurrency=defaults.max_concurrency if max_concurrency is None else max_concurrency,
    )
    return S3Store(client_config(args), transfer)
