"""Turn ``s3ckpt bench`` measurements into settings that stay inside S3's request-rate budget.

S3 serves about 3,500 PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per second per partitioned
prefix. A multipart transfer of ``size`` bytes in ``chunk`` byte parts makes ``ceil(size / chunk)`` part
requests, so at a throughput of ``T`` MiB/s one process sends about ``T / chunk_MiB`` requests a second,
and ``ranks`` processes saving under the same prefix at once send ``ranks`` times that. Past the budget
S3 answers 503 SlowDown, retries pile up and the save gets slower, not faster. This module picks the
fastest measured setting whose request rate, scaled to the number of ranks, stays under a safety margin
of that budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from s3_utils.limits import GET_REQUESTS_PER_PREFIX_PER_S, PUT_REQUESTS_PER_PREFIX_PER_S, MiB

DEFAULT_HEADROOM = 0.8
"""Use at most this fraction of the budget, leaving room for listings, deletes and other jobs."""


@dataclass(frozen=True)
class BenchResult:
    """One cell of the bench grid: a timed upload and download of ``size_bytes``.

    Args:
        chunk_size_MB: part size used, in MiB.
        concurrency: parallel part requests used.
        size_bytes: bytes moved each way.
        write_s: seconds for the upload.
        read_s: seconds for the download.

    Raises:
        ValueError: if a value is not positive.
    """

    chunk_size_MB: int
    concurrency: int
    size_bytes: int
    write_s: float
    read_s: float

    def __post_init__(self) -> None:
        for name in ("chunk_size_MB", "concurrency", "size_bytes", "write_s", "read_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"BenchResult.{name} must be > 0, got {value!r}")

    @property
    def parts(self) -> int:
        """Part requests one transfer of this size makes at this chunk size."""
        return math.ceil(self.size_bytes / (self.chunk_size_MB * MiB))

    @property
    def write_MiB_per_s(self) -> float:
        """Upload throughput."""
        return self.size_bytes / MiB / self.write_s

    @property
    def read_MiB_per_s(self) -> float:
        """Download throughput."""
        return self.size_bytes / MiB / self.read_s

    @property
    def puts_per_s(self) -> float:
        """Write requests a second from one process: the parts, plus create and complete if multipart."""
        requests = self.parts + 2 if self.parts > 1 else 1
        return requests / self.write_s

    @property
    def gets_per_s(self) -> float:
        """Read requests a second from one process: one HEAD plus one ranged GET per part."""
        return (self.parts + 1) / self.read_s


@dataclass(frozen=True)
class Recommendation:
    """Settings to use, with the request rates they are expected to cause.

    Attributes:
        chunk_size_MB: ``chunk_size_MB`` for S3CheckpointIO / ``s3_checkpointing``.
        max_write_concurrency: parallel part uploads per save.
        max_read_concurrency: parallel ranged GETs per load.
        write_MiB_per_s: measured upload throughput of one process with these settings.
        read_MiB_per_s: measured download throughput of one process with these settings.
        total_puts_per_s: expected write requests a second from all ranks together.
        total_gets_per_s: expected read requests a second from all ranks together.
        ranks: processes assumed to save or load under the same prefix at once.
        within_budget: False when no measured setting fits; then these are the gentlest measured.
    """

    chunk_size_MB: int
    max_write_concurrency: int
    max_read_concurrency: int
    write_MiB_per_s: float
    read_MiB_per_s: float
    total_puts_per_s: float
    total_gets_per_s: float
    ranks: int
    within_budget: bool


def recommend(
    results: Sequence[BenchResult], ranks: int = 1, headroom: float = DEFAULT_HEADROOM
) -> Recommendation:
    """Pick the fastest measured settings whose request rate fits the per-prefix budget.

    For each chunk size the fastest write concurrency and the fastest read concurrency that fit are
    taken; the chunk size that then gives the shortest save-plus-load time wins. If nothing fits, the
    setting with the fewest write requests a second is returned with ``within_budget=False``.

    Args:
        results: the measured grid.
        ranks: processes that save or load under the same prefix at the same time (>= 1).
        headroom: fraction of the budget to use, in (0, 1].

    Returns:
        The recommendation.

    Raises:
        ValueError: if ``results`` is empty, ``ranks`` < 1 or ``headroom`` is outside (0, 1].
    """
    if not results:
        raise ValueError("recommend() needs at least one bench result")
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    put_limit = PUT_REQUESTS_PER_PREFIX_PER_S * headroom
    get_limit = GET_REQUESTS_PER_PREFIX_PER_S * headroom

    best: tuple[float, BenchResult, BenchResult] | None = None
    for chunk in sorted({r.chunk_size_MB for r in results}):
        same_chunk = [r for r in results if r.chunk_size_MB == chunk]
        writes = [r for r in same_chunk if r.puts_per_s * ranks <= put_limit]
        reads = [r for r in same_chunk if r.gets_per_s * ranks <= get_limit]
        if not writes or not reads:
            continue
        write = max(writes, key=lambda r: (r.write_MiB_per_s, -r.concurrency))
        read = max(reads, key=lambda r: (r.read_MiB_per_s, -r.concurrency))
        seconds_per_MiB = 1 / write.write_MiB_per_s + 1 / read.read_MiB_per_s
        if best is None or seconds_per_MiB < best[0]:
            best = (seconds_per_MiB, write, read)

    if best is None:
        gentlest = min(results, key=lambda r: (r.puts_per_s, r.gets_per_s))
        return _recommendation(gentlest, gentlest, ranks, within_budget=False)
    return _recommendation(best[1], best[2], ranks, within_budget=True)


def _recommendation(write: BenchResult, read: BenchResult, ranks: int, within_budget: bool) -> Recommendation:
    return Recommendation(
        chunk_size_MB=write.chunk_size_MB,
        max_write_concurrency=write.concurrency,
        max_read_concurrency=read.concurrency,
        write_MiB_per_s=write.write_MiB_per_s,
        read_MiB_per_s=read.read_MiB_per_s,
        total_puts_per_s=write.puts_per_s * ranks,
        total_gets_per_s=read.gets_per_s * ranks,
        ranks=ranks,
        within_budget=within_budget,
    )
