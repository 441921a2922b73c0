"""S3's own limits: part sizes, part count, object size, request rates, batch sizes.

The one place these numbers live; every check and every recommendation imports them from here.
Source: the Amazon S3 user guide (multipart upload limits; request-rate performance guidelines).
"""

from __future__ import annotations

import math
from typing import Literal

from s3_utils.errors import S3ConfigError

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_PART_SIZE = 5 * MiB
"""The smallest part of a multipart upload (every part but the last)."""
MAX_PART_SIZE = 5 * GiB
"""The largest part of a multipart upload."""
MIN_PART_SIZE_MB = MIN_PART_SIZE // MiB
""":data:`MIN_PART_SIZE` in MiB (5), for settings given in MiB."""
MAX_PART_SIZE_MB = MAX_PART_SIZE // MiB
""":data:`MAX_PART_SIZE` in MiB (5120), for settings given in MiB."""
MAX_PARTS = 10_000
"""The most parts one multipart upload may have."""
MAX_SINGLE_PUT_SIZE = 5 * GiB
"""The largest object a single PutObject may store."""
MAX_COPY_OBJECT_SIZE = 5 * GiB
"""The largest object a single CopyObject may copy; larger ones are copied part by part (UploadPartCopy)."""
MAX_OBJECT_SIZE = 5 * TiB
"""The largest object S3 stores."""

PUT_REQUESTS_PER_PREFIX_PER_S = 3500
"""Write requests (PUT/COPY/POST/DELETE) S3 serves per second per partitioned prefix."""
GET_REQUESTS_PER_PREFIX_PER_S = 5500
"""Read requests (GET/HEAD) S3 serves per second per partitioned prefix."""

PUT_CLASS_OPERATIONS = frozenset(
    {
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "CopyObject",
        "DeleteObject",
        "DeleteObjects",
    }
)
"""The operations S3 counts against :data:`PUT_REQUESTS_PER_PREFIX_PER_S`."""
GET_CLASS_OPERATIONS = frozenset(
    {"GetObject", "HeadObject", "HeadBucket", "ListObjectsV2", "ListObjects", "ListMultipartUploads"}
)
"""The operations S3 counts against :data:`GET_REQUESTS_PER_PREFIX_PER_S`."""

RequestClass = Literal["PUT", "GET"]


def request_class(operation: str) -> RequestClass | None:
    """The request-rate class of an S3 operation: ``"PUT"``, ``"GET"``, or None for one S3 does not
    rate per prefix (CreateBucket and other bucket-level calls)."""
    if operation in PUT_CLASS_OPERATIONS:
        return "PUT"
    if operation in GET_CLASS_OPERATIONS:
        return "GET"
    return None


REQUEST_RATE_RETRY_OVERHEAD = 1.15
"""Allowance for retried requests on top of the planned ones, in request-rate estimates."""

MAX_KEYS_PER_DELETE = 1000
"""The most keys one DeleteObjects request may name."""
MAX_KEYS_PER_LIST = 1000
"""The most keys one ListObjectsV2 page returns."""


def check_object_size(size: int, url: str) -> None:
    """Check that an object of ``size`` bytes fits in S3 (at most :data:`MAX_OBJECT_SIZE`).

    Args:
        size: the object's size in bytes.
        url: the object, for the message.

    Raises:
        S3ConfigError: naming the object, its size and S3's limit.
    """
    if size > MAX_OBJECT_SIZE:
        raise S3ConfigError(
            f"{url}: an object of {size} bytes is larger than S3's limit of 5 TiB ({MAX_OBJECT_SIZE} "
            "bytes); split it into several objects"
        )


def check_part_size_MB(size: object, name: str = "chunk_size_MB") -> None:
    """Check a part size given in MiB: a number from :data:`MIN_PART_SIZE_MB` to :data:`MAX_PART_SIZE_MB`.

    Args:
        size: the setting's value.
        name: the setting, for the message.

    Raises:
        S3ConfigError: if ``size`` is not a number (bools and NaN are not) or is out of S3's range.
    """
    if isinstance(size, bool) or not isinstance(size, int | float) or math.isnan(size):
        raise S3ConfigError(f"{name}={size!r} is invalid: it must be a number of MiB")
    if not MIN_PART_SIZE <= size * MiB <= MAX_PART_SIZE:
        raise S3ConfigError(
            f"{name}={size!r} is out of range: S3 parts must be {MIN_PART_SIZE_MB} to "
            f"{MAX_PART_SIZE_MB} MiB (5 MiB to 5 GiB)"
        )


class S3RequestRateWarning(UserWarning):
    """Planned concurrency can exceed S3's per-prefix request rate (expect 503 SlowDown)."""


def prefix_request_rate_excess(clients_per_prefix: int, concurrency: int, operation: str) -> str | None:
    """Whether ``clients_per_prefix`` clients with ``concurrency`` requests in flight each can exceed
    S3's request rate on one prefix (estimated as one request per second per slot, plus retries).

    Args:
        clients_per_prefix: processes (ranks) sending to the same partitioned prefix at once.
        concurrency: requests each of them keeps in flight.
        operation: ``"PUT"`` (writes: 3,500/s per prefix) or ``"GET"`` (reads: 5,500/s per prefix).

    Returns:
        None within budget; else a sentence with the estimate, the budget and the highest
        ``concurrency`` that fits.

    Raises:
        ValueError: if ``operation`` is neither ``"PUT"`` nor ``"GET"``.
    """
    budgets = {"PUT": PUT_REQUESTS_PER_PREFIX_PER_S, "GET": GET_REQUESTS_PER_PREFIX_PER_S}
    if operation not in budgets:
        raise ValueError(f"operation={operation!r}: use 'PUT' or 'GET'")
    budget = budgets[operation]
    rate = clients_per_prefix * concurrency * REQUEST_RATE_RETRY_OVERHEAD
    if rate <= budget:
        return None
    highest = max(math.floor(budget / (clients_per_prefix * REQUEST_RATE_RETRY_OVERHEAD)), 1)
    return (
        f"{clients_per_prefix} clients x {concurrency} requests in flight can reach {rate:.0f} {operation}/s "
        f"on one prefix (x{REQUEST_RATE_RETRY_OVERHEAD} for retries), over S3's {budget} {operation}/s per "
        f"prefix: expect 503 SlowDown; use a concurrency <= {highest} or spread the keys over more prefixes"
    )
