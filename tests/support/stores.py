"""The S3Store tests use: S3's smallest part size, so multipart paths run with small objects."""

from __future__ import annotations

from typing import Any

import pytest

from s3_utils import S3ClientConfig, S3Store, TransferConfig, buffers

SMALL_CHUNK_MB = 5  # S3's smallest part size
CHUNK = SMALL_CHUNK_MB * 1024 * 1024
WORKERS = 4


def small_store(endpoint_url: str | None = None, **transfer: Any) -> S3Store:
    """An S3Store with 5 MiB parts and 4 workers, on the test server that ``AWS_*`` points at.

    Args:
        endpoint_url: Send requests here instead (a ``FaultProxy``'s ``url``).
        **transfer: ``TransferConfig`` fields that replace the defaults above.

    Returns:
        The store; close it (or use it as a context manager).
    """
    settings: dict[str, Any] = {"chunk_size_MB": SMALL_CHUNK_MB, "max_concurrency": WORKERS, **transfer}
    endpoint = {} if endpoint_url is None else {"endpoint_url": endpoint_url}
    return S3Store(S3ClientConfig.from_env(**endpoint), TransferConfig(**settings))


def count_new_part_buffers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every part buffer mapped afresh from now on (not those reused or kept).

    Returns:
        The list the sizes are appended to, in order.
    """
    created: list[int] = []
    real_new = buffers.new_part_buffer

    def counting_new(size: int) -> buffers.PartBuffer:
        created.append(size)
        return real_new(size)

    monkeypatch.setattr(buffers, "new_part_buffer", counting_new)
    return created
