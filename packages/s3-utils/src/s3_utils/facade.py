"""``S3Utils``: static methods with the names and arguments of NeMo's ``S3Utils``.

Code written against NeMo's helper keeps working; underneath, every call goes through an
:class:`S3Store` built from the environment. Stores are cached per process by the settings they
resolve to (the client settings read from ``AWS_*`` at each call, a digest of the credential variables,
the chunk size and concurrency), so a process that changes ``AWS_ENDPOINT_URL`` or its credentials
between two calls reaches the new endpoint with the new credentials.
"""

from __future__ import annotations

import atexit
import io
import os
import threading

from s3_dirpath_utils import build_s3_url, is_s3_url
from s3_utils import checkpoint_names
from s3_utils.client import credential_environment
from s3_utils.config import S3ClientConfig, TransferConfig
from s3_utils.store import S3Store, split_url

_DEFAULT_CHUNK_MB = 64
_DEFAULT_CONCURRENCY = 10

_lock = threading.Lock()
_stores: dict[tuple[S3ClientConfig, str, TransferConfig, int], S3Store] = {}


def _close_all() -> None:
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


atexit.register(_close_all)


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time
    _stores.clear()  # the parent's stores: their worker threads do not exist here


os.register_at_fork(after_in_child=_reset_after_fork)


def default_store(
    chunk_size_MB: float = _DEFAULT_CHUNK_MB, max_concurrency: int = _DEFAULT_CONCURRENCY
) -> S3Store:
    """The process-wide store for these transfer settings and the current ``AWS_*`` environment.

    The environment is read at every call, so a changed endpoint, region, profile or credential
    variable gives a store (and client) that uses it.

    Raises:
        S3ConfigError: if a setting is out of range.
    """
    transfer = TransferConfig(chunk_size_MB=chunk_size_MB, max_concurrency=max_concurrency)
    client = S3ClientConfig.from_env()
    cache_key = (client, credential_environment(), transfer, os.getpid())
    with _lock:
        store = _stores.get(cache_key)
        if store is None:
            store = S3Store(client, transfer)
            _stores[cache_key] = store
        return store


class S3Utils:
    """NeMo-compatible S3 helpers (all static)."""

    @staticmethod
    def s3_path_exists(s3_path: str, match_directory: bool = False) -> bool:
        """Whether an object exists at ``s3_path`` (or, with ``match_directory``, anything under it)."""
        return default_store().exists(s3_path, match_directory=match_directory)

    @staticmethod
    def remove_object(s3_path: str) -> None:
        """Delete the object at ``s3_path``."""
        default_store().delete(s3_path)

    @staticmethod
    def download_s3_file_to_stream(
        s3_path: str, chunk_size_MB: int = _DEFAULT_CHUNK_MB, max_concurrency: int = _DEFAULT_CONCURRENCY
    ) -> io.BytesIO:
        """The object at ``s3_path`` as a ``BytesIO`` positioned at 0."""
        data = default_store(chunk_size_MB, max_concurrency).download_bytes(s3_path)
        return io.BytesIO(data)

    @staticmethod
    def download_s3_file_to_path(
        s3_path: str,
        file_path: str,
        chunk_size_MB: int = _DEFAULT_CHUNK_MB,
        max_concurrency: int = _DEFAULT_CONCURRENCY,
    ) -> None:
        """Download ``s3_path`` to the local ``file_path`` (atomically)."""
        default_store(chunk_size_MB, max_concurrency).download_file(s3_path, file_path)

    @staticmethod
    def upload_file_stream_to_s3(
        bytes_stream: io.BytesIO,
        s3_path: str,
        chunk_size_MB: int = _DEFAULT_CHUNK_MB,
        max_concurrency: int = _DEFAULT_CONCURRENCY,
    ) -> None:
        """Upload ``bytes_stream`` from its start to ``s3_path``."""
        bytes_stream.seek(0)
        default_store(chunk_size_MB, max_concurrency).upload_stream(bytes_stream, s3_path)

    @staticmethod
    def upload_file(
        file_path: str,
        s3_path: str,
        chunk_size_MB: int = _DEFAULT_CHUNK_MB,
        max_concurrency: int = _DEFAULT_CONCURRENCY,
        remove_file: bool = False,
    ) -> None:
        """Upload the local ``file_path`` to ``s3_path``; delete the local file afterwards if asked."""
        default_store(chunk_size_MB, max_concurrency).upload_file(file_path, s3_path)
        if remove_file:
            os.remove(file_path)

    @staticmethod
    def find_files_with_suffix(
        base_path: str, suffix: str | None = None, return_key_only: bool = True
    ) -> list[str]:
        """Keys (or full URLs) under ``base_path`` that end with ``suffix`` (all of them if None)."""
        return [
            info.key if return_key_only else info.url
            for info in default_store().iter_objects(base_path)
            if suffix is None or info.key.endswith(suffix)
        ]

    @staticmethod
    def parse_s3_url(s3_url: str) -> tuple[str, str]:
        """``(bucket, key)`` of ``s3_url``.

        Raises:
            S3ConfigError: naming what is wrong with the URL.
        """
        return split_url(s3_url)

    @staticmethod
    def build_s3_url(bucket: str, key: str) -> str:
        """``s3://bucket/key``."""
        return build_s3_url(bucket, key)

    @staticmethod
    def is_s3_url(path: str | None) -> bool:
        """Whether ``path`` is an ``s3://`` URL."""
        return is_s3_url(path)

    @staticmethod
    def parse_prefix_with_step(path: str) -> str:
        """The part of a checkpoint path up to and including ``step=<n>-``."""
        return checkpoint_names.parse_prefix_with_step(path)
