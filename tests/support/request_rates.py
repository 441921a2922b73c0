"""An emulator of S3's request-rate limits: token buckets per partitioned key prefix, 503 SlowDown past them.

S3 serves about :data:`~s3_utils.limits.PUT_REQUESTS_PER_PREFIX_PER_S` writes (PUT/COPY/POST/DELETE)
and :data:`~s3_utils.limits.GET_REQUESTS_PER_PREFIX_PER_S` reads (GET/HEAD) per second per partitioned
prefix, and answers 503 SlowDown past that. A new bucket starts as one partition; S3 splits a prefix off
into its own partition only after sustained load on it. :class:`RequestRateEmulator` models both, with
the limits scaled by a factor so that tests stay small and fast:

    emulator = RequestRateEmulator(S3RequestRates().scaled(0.01))  # 35 PUT/s, 55 GET/s per prefix
    if not emulator.admit("PutObject", "bucket/ab12/model.pt"):
        ...  # answer 503 SlowDown

``FaultProxy(upstream, request_rates=...)`` (``support.fault_proxy``) puts an emulator in front of a real
server. Run as a script, this module starts such a proxy as its own process, for ``bench/``:

    python tests/support/request_rates.py --upstream http://127.0.0.1:8333 --put-per-s 350 \\
        --get-per-s 550 --port-file /tmp/rates.port

It serves until SIGTERM; ``GET /__rates__/stats`` answers its counts as JSON and ``POST
/__rates__/reset`` sets them to zero. Only the standard library and ``s3_utils`` (its limits and its
prefix rule) are imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from s3_utils.limits import (
    GET_CLASS_OPERATIONS,
    GET_REQUESTS_PER_PREFIX_PER_S,
    PUT_CLASS_OPERATIONS,
    PUT_REQUESTS_PER_PREFIX_PER_S,
)
from s3_utils.request_rate import request_prefix

PUT = "PUT"
GET = "GET"
OPERATION_CLASSES: dict[str, str] = {
    **dict.fromkeys(PUT_CLASS_OPERATIONS, PUT),
    **dict.fromkeys(GET_CLASS_OPERATIONS, GET),
}
"""The rate class (``"PUT"`` or ``"GET"``) of each operation S3 limits, as ``s3_utils.limits`` classes
them for the client's limiter; others are not limited."""

BUSY_FRACTION = 0.1
"""A partition with less than this fraction of its burst left is near its limit (busy)."""
QUIET_GAP_S = 1.0
"""A prefix not busy for this long starts its sustained-load clock again (split model)."""


@dataclass(frozen=True)
class S3RequestRates:
    """S3's request-rate limits per partition, or a scaled copy of them.

    Args:
        put_per_s: write requests (the ``"PUT"`` class) admitted per second per partition.
        get_per_s: read requests (the ``"GET"`` class) admitted per second per partition.
        burst_s: each bucket's depth, in seconds of its rate: a quiet partition admits
            ``rate * burst_s`` requests at once (at least one).
        split_after_s: None: every prefix (see :meth:`RequestRateEmulator.partition_of`) is its own
            partition from the start. A number: each S3 bucket starts as one partition shared by all
            its keys, and a prefix that has been busy (throttled, or near its partition's limit) for
            this many seconds is split off into a partition of its own, as S3 does under sustained load.
    """

    put_per_s: float = PUT_REQUESTS_PER_PREFIX_PER_S
    get_per_s: float = GET_REQUESTS_PER_PREFIX_PER_S
    burst_s: float = 1.0
    split_after_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("put_per_s", "get_per_s", "burst_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name}={value!r} must be a number above 0")
        if self.split_after_s is not None and not self.split_after_s > 0:
            raise ValueError(f"split_after_s={self.split_after_s!r} must be None or a number above 0")

    def scaled(self, factor: float) -> S3RequestRates:
        """These limits with both rates multiplied by ``factor`` (burst and split times unchanged)."""
        if not factor > 0:
            raise ValueError(f"factor={factor!r} must be a number above 0")
        return dataclasses.replace(self, put_per_s=self.put_per_s * factor, get_per_s=self.get_per_s * factor)

    def rate(self, rate_class: str) -> float:
        """The requests per second of ``rate_class`` (``"PUT"`` or ``"GET"``)."""
        return self.put_per_s if rate_class == PUT else self.get_per_s


@dataclass
class _Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` per second, one token per request."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    @property
    def busy(self) -> bool:
        return self.tokens < self.capacity * BUSY_FRACTION


@dataclass
class _Load:
    """How long one prefix has been busy in a shared partition (split model)."""

    busy_since: float
    last_busy: float


@dataclass
class _Counts:
    admitted: dict[str, int] = field(default_factory=lambda: {PUT: 0, GET: 0})
    throttled: dict[str, int] = field(default_factory=lambda: {PUT: 0, GET: 0})


class RequestRateEmulator:
    """Admits or throttles S3 requests as S3's per-partition request-rate limits would; thread-safe.

    Args:
        rates: the limits (e.g. ``S3RequestRates().scaled(0.01)``).
        clock: seconds, monotonic (a fake one in tests).
    """

    def __init__(self, rates: S3RequestRates, clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = rates
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._split: set[str] = set()
        self._loads: dict[str, _Load] = {}
        self._counts = _Counts()

    @staticmethod
    def prefix_of(key: str) -> str:
        """The "directory" of ``key`` (``bucket/key`` without a leading slash): up to its last ``/``.

        ``"b/ab12/rank0/model.pt"`` -> ``"b/ab12/rank0/"``; ``"b"`` (a bucket-level request) -> ``"b/"``.
        """
        bucket, _, path = key.partition("/")
        return request_prefix(bucket, path or None)

    def partition_of(self, key: str) -> str:
        """The partition that serves ``key`` now: its prefix, or (split model) its bucket's shared
        partition ``"bucket/"`` until the prefix has been split off."""
        with self._lock:
            return self._partition_of(self.prefix_of(key))

    def admit(self, operation: str, key: str) -> bool:
        """Take a token for ``operation`` on ``key`` (``bucket/key``); False: answer 503 SlowDown.

        Operations outside :data:`OPERATION_CLASSES` (bucket creation, ...) are always admitted.
        """
        rate_class = OPERATION_CLASSES.get(operation)
        if rate_class is None:
            return True
        prefix = self.prefix_of(key)
        with self._lock:
            now = self._clock()
            partition = self._partition_of(prefix)
            bucket = self._bucket(partition, rate_class, now)
            admitted = bucket.take(now)
            (self._counts.admitted if admitted else self._counts.throttled)[rate_class] += 1
            if partition != prefix:
                self._track_load(prefix, not admitted or bucket.busy, now)
            return admitted

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests admitted and throttled so far per class.

        Returns:
            e.g. ``{"PUT": {"admitted": 9, "throttled": 2}, "GET": {"admitted": 0, "throttled": 0}}``.
        """
        with self._lock:
            return {
                rate_class: {
                    "admitted": self._counts.admitted[rate_class],
                    "throttled": self._counts.throttled[rate_class],
                }
                for rate_class in (PUT, GET)
            }

    def reset(self) -> None:
        """Forget every bucket, split and count: as a fresh emulator with the same limits."""
        with self._lock:
            self._buckets.clear()
            self._split.clear()
            self._loads.clear()
            self._counts = _Counts()

    def _partition_of(self, prefix: str) -> str:
        if self.rates.split_after_s is None or prefix in self._split:
            return prefix
        return prefix.split("/", 1)[0] + "/"

    def _bucket(self, partition: str, rate_class: str, now: float) -> _Bucket:
        bucket = self._buckets.get((partition, rate_class))
        if bucket is None:
            rate = self.rates.rate(rate_class)
            capacity = max(1.0, rate * self.rates.burst_s)
            bucket = self._buckets[(partition, rate_class)] = _Bucket(rate, capacity, capacity, now)
        return bucket

    def _track_load(self, prefix: str, busy: bool, now: float) -> None:
        """Split ``prefix`` off its shared partition once it has been busy for ``split_after_s``."""
        assert self.rates.split_after_s is not None
        load = self._loads.get(prefix)
        if load is not None and now - load.last_busy > QUIET_GAP_S:
            del self._loads[prefix]
            load = None
        if not busy:
            return
        if load is None:
            self._loads[prefix] = _Load(busy_since=now, last_busy=now)
            return
        load.last_busy = now
        if now - load.busy_since >= self.rates.split_after_s:
            self._split.add(prefix)
            del self._loads[prefix]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="An S3 request-rate emulating proxy in front of a server.")
    parser.add_argument("--upstream", required=True, help="the S3 server, e.g. http://127.0.0.1:8333")
    parser.add_argument("--put-per-s", type=float, default=PUT_REQUESTS_PER_PREFIX_PER_S)
    parser.add_argument("--get-per-s", type=float, default=GET_REQUESTS_PER_PREFIX_PER_S)
    parser.add_argument("--burst-s", type=float, default=S3RequestRates.burst_s)
    parser.add_argument("--split-after-s", type=float, default=None)
    parser.add_argument("--port-file", type=pathlib.Path, help="write the proxy's port here once it serves")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve a rate-emulating FaultProxy in front of ``--upstream`` until SIGTERM or SIGINT; returns 0."""
    from support.fault_proxy import FaultProxy

    args = _arguments(argv)
    rates = S3RequestRates(args.put_per_s, args.get_per_s, args.burst_s, args.split_after_s)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FaultProxy(args.upstream, rates, keep_requests=False, keep_upstream_alive=True) as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        if args.port_file is not None:
            partial = args.port_file.with_name(args.port_file.name + ".partial")
            partial.write_text(port)
            os.replace(partial, args.port_file)
        print(json.dumps({"url": proxy.url, "rates": dataclasses.asdict(rates)}), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    # Run as a script: import this module again as ``support.request_rates`` (as tests do), so that the
    # proxy and the CLI share one S3RequestRates class.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from support.request_rates import main as _main

    sys.exit(_main())
