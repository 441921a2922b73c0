"""Requests that adapt: a client-side rate limit per key prefix, learnt from S3's SlowDown answers.

S3 serves a bounded request rate per partitioned prefix (:mod:`s3_utils.limits`) and answers 503
SlowDown past it. Retrying at the same rate only adds refused requests; instead, each prefix and
request class (PUT or GET) gets an allowed rate that follows AIMD, as TCP does and as botocore's
``adaptive`` retry mode does with its CUBIC variant:

* until the first SlowDown a prefix is not limited at all: a request costs two short locks (about
  10 microseconds) and never waits;
* on a SlowDown the allowed rate becomes :attr:`RateLimiterSettings.decrease_factor` times the rate of
  successes served on the prefix over the last half second or second (never below
  :attr:`RateLimiterSettings.min_rate`), once per burst: a SlowDown to a request sent before the last
  decrease, or within :attr:`RateLimiterSettings.decrease_interval_s` of it, is the same congestion
  already answered. A SlowDown before enough requests were served to tell a rate (8, or one second's
  worth) sets no limit: a few random refusals of a small transfer are the retry's business alone;
* each success then adds back a little (:attr:`RateLimiterSettings.increase_fraction` of the rate set
  by the last decrease, per second of successes), probing for the limit again;
* a limited prefix is gated by a token bucket: a request reserves the next free start time and sleeps
  until then, with random jitter so processes sharing a prefix do not move in lockstep; one that slept
  through a decrease then waits the place the new rate gives it;
* a prefix that has seen no SlowDown for :attr:`RateLimiterSettings.quiet_s` is no longer limited.

The state lives in a :class:`~s3_utils.rate_table.RateTable` shared by every thread of the process,
by the processes it starts (the upload helper of a rank among them) and by the other local ranks of
its ``torch.distributed`` job: :func:`process_limiter`.
The prefix of a key is its parent "directory" (:func:`request_prefix`), the unit S3 partitions by in
practice and the one the rank-hashed shard layout spreads over.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from s3_utils.rate_table import RateTable, Slot, open_shared_table, slot_key

logger = logging.getLogger(__name__)

_WINDOW_S = 0.5
_MIN_SUCCESSES = 8


@dataclass(frozen=True)
class RateLimiterSettings:
    """How fast the allowed rate of a prefix falls and climbs.

    Attributes:
        min_rate: the lowest allowed rate, requests per second.
        decrease_factor: on a SlowDown, the allowed rate becomes this fraction of the measured one.
        increase_fraction: after a decrease, each second of successes adds this fraction of the rate set
            by the decrease.
        burst_s: a limited prefix may start this many seconds' worth of requests at once (at least one).
        jitter: a wait is stretched by a random fraction from 0 to this.
        decrease_interval_s: after a decrease, SlowDowns for this long are taken as the same burst.
        quiet_s: a prefix that saw no SlowDown for this long is no longer limited.
    """

    min_rate: float = 0.5
    decrease_factor: float = 0.7
    increase_fraction: float = 0.1
    burst_s: float = 0.1
    jitter: float = 0.2
    decrease_interval_s: float = 0.5
    quiet_s: float = 30.0


@dataclass(frozen=True)
class Grant:
    """Leave to send one request; hand it back with the answer (:meth:`RequestRateLimiter.succeeded`,
    :meth:`RequestRateLimiter.throttled`).

    Attributes:
        prefix: the prefix the request goes to (:func:`request_prefix`).
        request_class: ``"PUT"`` or ``"GET"``.
        epoch: the prefix's decrease count when it was given (see :meth:`RequestRateLimiter.throttled`).
        waited_s: seconds spent waiting for it.
    """

    prefix: str
    request_class: str
    epoch: int
    waited_s: float


class RequestRateLimiter:
    """The AIMD rate limit of every prefix (see the module), kept in ``table``.

    Args:
        table: where the state of each prefix lives.
        settings: how fast rates fall and climb.
        clock: seconds on a clock shared by the processes of the table (:func:`time.monotonic`).
        sleep: waits that many seconds.
        uniform: a random number in [0, 1), for jitter.
    """

    def __init__(
        self,
        table: RateTable,
        settings: RateLimiterSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self.table = table
        self.settings = settings or RateLimiterSettings()
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform

    def acquire(self, prefix: str, request_class: str) -> Grant:
        """Wait until a request of ``request_class`` (``"PUT"`` or ``"GET"``) may go to ``prefix``.

        Returns at once while the prefix is not limited; else reserves the next start time the allowed
        rate gives and sleeps until it (jittered), longer if the rate fell meanwhile.
        """
        key = slot_key(prefix, request_class)
        with self.table.locked():
            epoch, rate, wait = self._reserve(key, self._clock())
        waited = 0.0
        while wait > 0:
            wait *= 1.0 + self.settings.jitter * self._uniform()
            self._sleep(wait)
            waited += wait
            with self.table.locked():
                epoch, rate, wait = self._stretch(key, epoch, rate, self._clock())
        return Grant(prefix, request_class, epoch, waited)

    def _reserve(self, key: int, now: float) -> tuple[int, float, float]:
        """Take a token from ``key``'s bucket: the epoch, the rate, and how long to wait for the token."""
        index = self.table.find(key)
        if index is None:
            return 0, 0.0, 0.0
        slot = self.table.read(index)
        slot.used_at = now
        self._recover_if_quiet(slot, now)
        if slot.rate > 0:
            capacity = max(1.0, slot.rate * self.settings.burst_s)
            slot.tokens = min(capacity, slot.tokens + (now - slot.refilled_at) * slot.rate)
            slot.refilled_at = now
            slot.tokens -= 1.0
        self.table.write(index, slot)
        wait = -slot.tokens / slot.rate if slot.rate > 0 and slot.tokens < 0 else 0.0
        return slot.epoch, slot.rate, wait

    def _stretch(self, key: int, epoch: int, rate: float, now: float) -> tuple[int, float, float]:
        """After a wait reserved at ``rate``: the extra wait if a decrease came meanwhile, which puts the
        request where the new rate would have (its place in the queue, at the new spacing)."""
        index = self.table.find(key)
        if index is None:
            return epoch, rate, 0.0
        slot = self.table.read(index)
        if slot.epoch == epoch or not 0 < slot.rate < rate:
            return slot.epoch, slot.rate, 0.0
        return slot.epoch, slot.rate, max(0.0, now - slot.decreased_at) * (rate / slot.rate - 1)

    def succeeded(self, grant: Grant) -> None:
        """Count a request its prefix served: measured, and the allowed rate climbs a little."""
        key = slot_key(grant.prefix, grant.request_class)
        with self.table.locked():
            now = self._clock()
            index = self.table.claim(key, now, idle_before=now - self.settings.quiet_s)
            slot = self.table.read(index)
            slot.used_at = now
            self._count_success(slot, now)
            if slot.rate > 0:
                slot.rate += slot.step / slot.rate
            self.table.write(index, slot)

    def throttled(self, grant: Grant) -> None:
        """Count a SlowDown to the request sent under ``grant``: the allowed rate of its prefix falls,
        unless a decrease since that request was sent already answered the same congestion."""
        key = slot_key(grant.prefix, grant.request_class)
        settings = self.settings
        with self.table.locked():
            now = self._clock()
            index = self.table.claim(key, now, idle_before=now - settings.quiet_s)
            slot = self.table.read(index)
            slot.used_at = now
            if grant.epoch == slot.epoch and now - slot.decreased_at >= settings.decrease_interval_s:
                self._decrease(slot, now)
            self.table.write(index, slot)

    def rate(self, prefix: str, request_class: str) -> float | None:
        """The allowed rate of ``prefix`` in requests per second, or None while it is not limited."""
        with self.table.locked():
            index = self.table.find(slot_key(prefix, request_class))
            if index is None:
                return None
            slot = self.table.read(index)
        return slot.rate or None

    def _decrease(self, slot: Slot, now: float) -> None:
        """The multiplicative decrease: from the rate served (or the allowed one, if lower)."""
        settings = self.settings
        served = self._served(slot, now)
        if slot.rate > 0:
            base = min(slot.rate, served) if served > 0 else slot.rate
        elif served > 0:
            base = served
            slot.tokens, slot.refilled_at = 0.0, now
        else:
            return  # too little served yet to learn a rate from: the retry's backoff alone slows down
        slot.rate = max(settings.min_rate, base * settings.decrease_factor)
        slot.step = slot.rate * settings.increase_fraction
        slot.epoch += 1
        slot.decreased_at = now
        slot.last_count = slot.last_s = slot.window_count = 0.0  # the next decrease measures the new rate
        slot.window_start = now
        logger.debug("SlowDown: requests limited to %.2f/s (%.2f/s were served)", slot.rate, served)

    def _recover_if_quiet(self, slot: Slot, now: float) -> None:
        if slot.rate > 0 and now - slot.decreased_at >= self.settings.quiet_s:
            slot.rate = 0.0

    @staticmethod
    def _count_success(slot: Slot, now: float) -> None:
        elapsed = now - slot.window_start
        if elapsed >= _WINDOW_S:
            slot.last_count, slot.last_s = slot.window_count, elapsed
            slot.window_start, slot.window_count = now, 0.0
        slot.window_count += 1

    @staticmethod
    def _served(slot: Slot, now: float) -> float:
        """Successes per second over the last one or two windows (since the last decrease at most), or
        0 while too few were seen to tell a rate: fewer than ``_MIN_SUCCESSES`` in under a window since
        the last decrease, or in under two windows before the first one."""
        count = slot.last_count + slot.window_count
        span = slot.last_s + now - slot.window_start
        enough_s = _WINDOW_S if slot.rate > 0 else 2 * _WINDOW_S
        if count < _MIN_SUCCESSES and (count == 0 or span < enough_s):
            return 0.0
        return count / max(span, _WINDOW_S)


def request_prefix(bucket: str | None, key: str | None) -> str:
    """The prefix a request is rated under: the bucket and the key's parent "directory" (up to and
    including its last ``/``); the bucket alone for a key at its top or none."""
    parent = key[: key.rfind("/") + 1] if key else ""
    return f"{bucket or ''}/{parent}"


_process_lock = threading.Lock()
_process_limiter: RequestRateLimiter | None = None


def process_limiter() -> RequestRateLimiter:
    """The limiter of this process, over its shared table (created, or joined from the environment,
    on first use); every :class:`~s3_utils.retry.Requester` of the process uses it."""
    global _process_limiter
    if _process_limiter is None:
        with _process_lock:
            if _process_limiter is None:
                _process_limiter = RequestRateLimiter(open_shared_table())
    return _process_limiter
