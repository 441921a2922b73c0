"""Per-transfer statistics, and the subscribers that receive them.

Transfer code records what happened (bytes, requests, retries); whoever wants metrics or progress
subscribes. s3_utils itself only logs at DEBUG; the layers above log one INFO line per save or load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from s3_utils.limits import MiB

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferStats:
    """What one transfer did.

    Attributes:
        operation: ``"upload"``, ``"download"`` or ``"copy"``.
        url: the object's ``s3://`` URL.
        bytes: payload bytes moved.
        seconds: wall time from the first request to the last answer.
        requests: HTTP requests sent, retries included.
        retries: requests that were sent again after a transient failure.
        throttled: requests S3 refused for the request rate (503 SlowDown and the like), a part of the
            failures ``retries`` sent again.
        rate_wait_s: seconds requests spent waiting for the request rate of their prefix
            (:mod:`s3_utils.request_rate`), added over requests running at once.
    """

    operation: str
    url: str
    bytes: int
    seconds: float
    requests: int
    retries: int
    throttled: int = 0
    rate_wait_s: float = 0.0

    @property
    def mib_per_s(self) -> float:
        """Throughput in MiB/s (0 for an instant transfer)."""
        return self.bytes / MiB / self.seconds if self.seconds > 0 else 0.0


TransferSubscriber = Callable[[TransferStats], None]
"""Called once with the stats of every finished transfer (successful ones only)."""

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes a transfer has just moved, once per part or range that succeeded.

Bytes are reported only after their request succeeded, so a retried part is counted once and the
calls of one transfer add up to its size exactly. Calls come from the store's worker threads, one at a
time; keep the callback quick (a progress bar's ``update``). An exception it raises is logged and
ignored: progress never fails a transfer.
"""


class StatsRecorder:
    """Thread-safe counters for one transfer; :meth:`finish` freezes them into a :class:`TransferStats`."""

    def __init__(self, operation: str, url: str, on_progress: ProgressCallback | None = None) -> None:
        self.operation = operation
        self.url = url
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self._start = time.monotonic()
        self._bytes = 0
        self._requests = 0
        self._retries = 0
        self._throttled = 0
        self._rate_wait_s = 0.0

    def request(self) -> None:
        """Count one HTTP request (first attempt or retry)."""
        with self._lock:
            self._requests += 1

    def retry(self) -> None:
        """Count one retry."""
        with self._lock:
            self._retries += 1

    def throttled(self) -> None:
        """Count one request refused for the request rate."""
        with self._lock:
            self._throttled += 1

    def rate_wait(self, seconds: float) -> None:
        """Count ``seconds`` one request waited for the request rate of its prefix."""
        with self._lock:
            self._rate_wait_s += seconds

    def add_bytes(self, count: int) -> None:
        """Count ``count`` payload bytes as moved (call it once a request has succeeded), and tell the
        transfer's :data:`ProgressCallback`, if it has one."""
        with self._lock:
            self._bytes += count
        if self._on_progress is None:
            return
        with self._progress_lock:
            try:
                self._on_progress(count)
            except Exception:
                logger.exception("progress callback %r failed; ignored", self._on_progress)

    @property
    def retries(self) -> int:
        """Retries so far."""
        with self._lock:
            return self._retries

    def finish(self, subscribers: Sequence[TransferSubscriber] = ()) -> TransferStats:
        """Freeze the counters, tell ``subscribers``, and return the stats.

        A subscriber that raises is logged and skipped: metrics must never fail a transfer.
        """
        with self._lock:
            stats = TransferStats(
                operation=self.operation,
                url=self.url,
                bytes=self._bytes,
                seconds=time.monotonic() - self._start,
                requests=self._requests,
                retries=self._retries,
                throttled=self._throttled,
                rate_wait_s=self._rate_wait_s,
            )
        logger.debug(
            "%s %s: %d bytes in %.3fs (%.1f MiB/s), %d requests, %d retries (%d throttled), "
            "%.2fs waiting for the request rate",
            stats.operation,
            stats.url,
            stats.bytes,
            stats.seconds,
            stats.mib_per_s,
            stats.requests,
            stats.retries,
            stats.throttled,
            stats.rate_wait_s,
        )
        for subscriber in subscribers:
            try:
                subscriber(stats)
            except Exception:
                logger.exception("transfer stats subscriber %r failed; ignored", subscriber)
        return stats
