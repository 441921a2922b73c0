"""Requests that adapt: a client-side rate limit per key prefix, paced to a known share and learnt
from S3's SlowDown answers.

S3 serves a bounded request rate per partitioned prefix (:mod:`s3_utils.limits`) and answers 503
SlowDown past it. Retrying at the same rate only adds refused requests; instead, each prefix and
request class (PUT or GET) gets an allowed rate, from two sources:

* **a share**, when the caller knows who else writes under the prefix: ``N`` ranks of a job writing
  under one prefix are each entitled to ``1/N`` of its rate (:func:`node_share`, from the store's
  per-prefix rates, :class:`~s3_utils.config.S3ClientConfig`), and the ``L`` of them on this machine,
  which share one table, together to ``L/N``. :meth:`RequestRateLimiter.share` sets that ceiling
  until :meth:`RequestRateLimiter.release`; from the first request on, the machine's requests to the
  prefix never exceed it (a token bucket at the share, :attr:`RateLimiterSettings.share_burst_s`
  deep), so the first wave of a many-rank save goes out paced instead of drawing the SlowDowns that
  would teach the rate;
* **AIMD**, as TCP does and as botocore's ``adaptive`` retry mode does with its CUBIC variant: on a
  SlowDown the allowed rate becomes :attr:`RateLimiterSettings.decrease_factor` times the rate of
  successes served on the prefix over the last half second or second (or the share, if lower; never
  below :attr:`RateLimiterSettings.min_rate`), once per burst: a SlowDown to a request sent before the
  last decrease, or within :attr:`RateLimiterSettings.decrease_interval_s` of it, is the same
  congestion already answered. A SlowDown before enough requests were served to tell a rate (8, or
  one second's worth) sets no limit: a few random refusals of a small transfer are the retry's
  business alone. Each success then adds back a little
  (:attr:`RateLimiterSettings.increase_fraction` of the rate set by the last decrease, per second of
  successes), probing for the limit again; a prefix that has seen no SlowDown for
  :attr:`RateLimiterSettings.quiet_s` is no longer limited by AIMD.

Requests go at the lower of the two rates; with neither (no share declared, no SlowDown yet) a request
costs two short locks (a few microseconds) and never waits. A limited prefix is gated by a token
bucket: a request reserves the next free start time and sleeps until then, with random jitter (at
most a fraction of one request's spacing) so processes sharing a prefix do not move in lockstep; one
that slept through a decrease then waits the place the new rate gives it.

The state lives in a :class:`~s3_utils.rate_table.RateTable` shared by every thread of the process,
by the processes it starts (the upload helper of a rank among them) and by the other local ranks of
its ``torch.distributed`` job: :func:`process_limiter`; :func:`sharing_group` names it, so that a
job can count the ranks of each machine. The prefix of a key is its parent "directory"
(:func:`request_prefix`), the unit S3 partitions by in practice and the one the rank-hashed shard
layout spreads over.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from s3_utils.rate_table import RateTable, Slot, open_shared_table, slot_key

logger = logging.getLogger(__name__)

_WINDOW_S = 0.5
_MIN_SUCCESSES = 8
_IDLE_S = 2.0
"""No success on a prefix for this long: it was not busy, and what was counted before is no rate."""


@dataclass(frozen=True)
class RateLimiterSettings:
    """How fast the allowed rate of a prefix falls and climbs.

    Attributes:
        min_rate: the lowest allowed rate, requests per second.
        decrease_factor: on a SlowDown, the allowed rate becomes this fraction of the measured one.
        increase_fraction: after a decrease, each second of successes adds this fraction of the rate set
            by the decrease.
        burst_s: a prefix limited by AIMD may start this many seconds' worth of requests at once (at
            least one).
        share_burst_s: a prefix paced to a share (:meth:`RequestRateLimiter.share`) may start this
            many seconds' worth of it at once (at least one).
        jitter: a wait is stretched by a random fraction from 0 to this of itself, at most of one
            request's spacing at the allowed rate.
        decrease_interval_s: after a decrease, SlowDowns for this long are taken as the same burst.
        quiet_s: a prefix that saw no SlowDown for this long is no longer limited.
    """

    min_rate: float = 0.5
    decrease_factor: float = 0.7
    increase_fraction: float = 0.1
    burst_s: float = 0.1
    share_burst_s: float = 0.5
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
        rate (the lower of its share and its AIMD rate) gives and sleeps until it (jittered), longer if
        the rate fell meanwhile.
        """
        key = slot_key(prefix, request_class)
        with self.table.locked():
            epoch, rate, wait = self._reserve(key, self._clock())
        waited = 0.0
        while wait > 0:
            wait += self.settings.jitter * self._uniform() * min(wait, 1.0 / rate)
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
        self._recover_if_quiet(slot, now)
        slot.used_at = now
        limit = _limit(slot)
        if limit > 0:
            slot.tokens = min(self._capacity(slot), slot.tokens + (now - slot.refilled_at) * limit)
            slot.refilled_at = now
            slot.tokens -= 1.0
        self.table.write(index, slot)
        wait = -slot.tokens / limit if limit > 0 and slot.tokens < 0 else 0.0
        return slot.epoch, limit, wait

    def _capacity(self, slot: Slot) -> float:
        """The depth of ``slot``'s token bucket: the burst of its share while the share binds, else
        of its AIMD rate."""
        limit = _limit(slot)
        paced_by_share = slot.ceiling > 0 and limit == slot.ceiling
        return max(1.0, limit * (self.settings.share_burst_s if paced_by_share else self.settings.burst_s))

    def _stretch(self, key: int, epoch: int, rate: float, now: float) -> tuple[int, float, float]:
        """After a wait reserved at ``rate``: the extra wait if a decrease came meanwhile, which puts the
        request where the new rate would have (its place in the queue, at the new spacing)."""
        index = self.table.find(key)
        if index is None:
            return epoch, rate, 0.0
        slot = self.table.read(index)
        limit = _limit(slot)
        if slot.epoch == epoch or not 0 < limit < rate:
            return slot.epoch, limit, 0.0
        return slot.epoch, limit, max(0.0, now - slot.decreased_at) * (rate / limit - 1)

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

    def share(self, prefix: str, request_class: str, rate: float) -> None:
        """Pace this machine's requests of ``request_class`` to ``prefix`` to at most ``rate`` per
        second (its share, :func:`node_share`), from the next request on, until :meth:`release`.

        Every process of the table that writes under the prefix declares the same share and releases
        it when done; the share ends when the last of them released it (or, if they were killed, once
        the prefix has been idle for :attr:`RateLimiterSettings.quiet_s`). A SlowDown still lowers the
        rate below it (AIMD).

        Raises:
            ValueError: if ``rate`` is not a number > 0.
        """
        if not rate > 0:
            raise ValueError(f"rate={rate!r}: a share must be > 0 requests per second")
        key = slot_key(prefix, request_class)
        with self.table.locked():
            now = self._clock()
            index = self.table.claim(key, now, idle_before=now - self.settings.quiet_s)
            slot = self.table.read(index)
            self._recover_if_quiet(slot, now)
            unlimited = _limit(slot) == 0
            slot.ceiling, slot.holders, slot.used_at = rate, slot.holders + 1, now
            if unlimited:  # paced from now on, starting with a full bucket
                slot.tokens, slot.refilled_at = self._capacity(slot), now
            self.table.write(index, slot)

    def release(self, prefix: str, request_class: str) -> None:
        """Hand back one :meth:`share` of ``prefix``: its requests are no longer paced once every
        process that declared it has released it."""
        with self.table.locked():
            index = self.table.find(slot_key(prefix, request_class))
            if index is None:
                return
            slot = self.table.read(index)
            slot.holders = max(0.0, slot.holders - 1)
            if slot.holders == 0:
                slot.ceiling = 0.0
            self.table.write(index, slot)

    def rate(self, prefix: str, request_class: str) -> float | None:
        """The rate AIMD allows ``prefix`` in requests per second, or None while SlowDown set none."""
        with self.table.locked():
            index = self.table.find(slot_key(prefix, request_class))
            if index is None:
                return None
            slot = self.table.read(index)
        return slot.rate or None

    def limit(self, prefix: str, request_class: str) -> float | None:
        """The rate requests to ``prefix`` go at now: the lower of its share and its AIMD rate, or None
        while neither limits it."""
        with self.table.locked():
            index = self.table.find(slot_key(prefix, request_class))
            if index is None:
                return None
            slot = self.table.read(index)
        return _limit(slot) or None

    def _decrease(self, slot: Slot, now: float) -> None:
        """The multiplicative decrease: from the rate served (or the allowed one, if lower)."""
        settings = self.settings
        served = self._served(slot, now)
        limit = _limit(slot)
        if limit > 0:
            base = min(limit, served) if served > 0 else limit
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
        """End AIMD's limit after :attr:`RateLimiterSettings.quiet_s` without a decrease, and a share
        whose prefix went unused that long (its holders were killed before they released it)."""
        quiet_s = self.settings.quiet_s
        if slot.rate > 0 and now - slot.decreased_at >= quiet_s:
            slot.rate = 0.0
        if slot.ceiling > 0 and now - slot.used_at >= quiet_s:
            slot.ceiling = slot.holders = 0.0

    @staticmethod
    def _count_success(slot: Slot, now: float) -> None:
        elapsed = now - slot.window_start
        if _went_idle(slot, now):
            slot.last_count = slot.last_s = 0.0  # counted before an idle spell: not a rate
            slot.window_start, slot.window_count = now, 0.0
        elif elapsed >= _WINDOW_S:
            slot.last_count, slot.last_s = slot.window_count, elapsed
            slot.window_start, slot.window_count = now, 0.0
        slot.window_count += 1

    @staticmethod
    def _served(slot: Slot, now: float) -> float:
        """Successes per second over the last one or two windows (since the last decrease at most), or
        0 while too few were seen to tell a rate: fewer than ``_MIN_SUCCESSES`` in under a window since
        the last decrease, or in under two windows before the first one; and 0 after an idle spell
        (a burst after a quiet minute must not be judged by the few requests before it)."""
        if _went_idle(slot, now):
            return 0.0
        count = slot.last_count + slot.window_count
        span = slot.last_s + now - slot.window_start
        enough_s = _WINDOW_S if slot.rate > 0 else 2 * _WINDOW_S
        if count < _MIN_SUCCESSES and (count == 0 or span < enough_s):
            return 0.0
        return count / max(span, _WINDOW_S)


def _went_idle(slot: Slot, now: float) -> bool:
    """Whether no request succeeded for :data:`_IDLE_S`: a window rolls at the first success after
    :data:`_WINDOW_S`, so one older than both saw its last success at least ``_IDLE_S`` ago."""
    return slot.window_count > 0 and now - slot.window_start >= _WINDOW_S + _IDLE_S


def _limit(slot: Slot) -> float:
    """The rate ``slot``'s requests go at: the lower of its share and its AIMD rate (0: unlimited)."""
    if slot.rate > 0 and slot.ceiling > 0:
        return min(slot.rate, slot.ceiling)
    return slot.rate or slot.ceiling


def node_share(prefix_rate: float, writers: int, local_writers: int) -> float:
    """The requests per second the processes of one machine may send to a prefix that ``writers``
    ranks share, ``local_writers`` of them on this machine: ``prefix_rate * local_writers / writers``.

    Args:
        prefix_rate: the requests per second the store serves on the prefix
            (:meth:`~s3_utils.config.S3ClientConfig.requests_per_prefix_per_s`).
        writers: the ranks (of every machine) sending to the prefix.
        local_writers: those of them on this machine, sharing its table.

    Raises:
        ValueError: unless ``1 <= local_writers <= writers`` and ``prefix_rate > 0``.
    """
    if not 1 <= local_writers <= writers or not prefix_rate > 0:
        raise ValueError(
            f"node_share(prefix_rate={prefix_rate!r}, writers={writers!r}, local_writers={local_writers!r}):"
            " needs prefix_rate > 0 and 1 <= local_writers <= writers"
        )
    return prefix_rate * local_writers / writers


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


def sharing_group() -> str:
    """A name that the processes sharing this process's limiter state (its table: the local ranks of
    its job, their helper processes) have in common and no other process has: the host and the table."""
    table = process_limiter().table
    return f"{socket.gethostname()}:{table.path or f'process {os.getpid()}'}"
