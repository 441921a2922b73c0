"""The per-prefix request-rate limiter (a known share, then AIMD): its rules on a fake clock, its table
shared with a child process, and its effect on real requests through a proxy that refuses past a
request rate."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3_utils import TransferStats
from s3_utils.rate_table import TABLE_ENV_VAR, RateTable, open_shared_table
from s3_utils.request_rate import (
    RateLimiterSettings,
    RequestRateLimiter,
    node_share,
    process_limiter,
    request_prefix,
)
from support.fault_proxy import FaultProxy
from support.request_rates import S3RequestRates
from support.s3_server import MotoServer
from support.stores import small_store


class FakeClock:
    """Time that moves only when a test (or a sleep) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter_on(clock: FakeClock, uniform: float = 0.0, **settings: float) -> RequestRateLimiter:
    return RequestRateLimiter(
        RateTable.local(),
        RateLimiterSettings(**settings),
        clock=clock,
        sleep=clock.sleep,
        uniform=lambda: uniform,
    )


def serve(limiter: RequestRateLimiter, clock: FakeClock, prefix: str, count: int, every_s: float) -> None:
    """``count`` requests to ``prefix`` that all succeed, one every ``every_s`` seconds."""
    for _ in range(count):
        limiter.succeeded(limiter.acquire(prefix, "PUT"))
        clock.now += every_s


def test_an_unthrottled_prefix_never_waits_and_has_no_limit(clock: FakeClock) -> None:
    limiter = limiter_on(clock)
    serve(limiter, clock, "b/ckpt/", 500, every_s=0.0001)  # 10,000 requests/s
    assert clock.slept == []
    assert limiter.rate("b/ckpt/", "PUT") is None


def test_a_slowdown_sets_the_rate_to_a_fraction_of_the_measured_one(clock: FakeClock) -> None:
    limiter = limiter_on(clock, decrease_factor=0.5)
    serve(limiter, clock, "b/ckpt/", 200, every_s=0.01)  # 100 requests/s for 2 s
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    rate = limiter.rate("b/ckpt/", "PUT")
    assert rate is not None
    assert 45 <= rate <= 55


def test_a_slowdown_after_an_idle_spell_is_not_judged_by_the_few_requests_before_it(clock: FakeClock) -> None:
    # A save's few GETs, a quiet spell, then a load's burst drawing SlowDown before any success: the
    # three old successes over ten seconds are no measure of what the prefix serves (0.3/s).
    limiter = limiter_on(clock, decrease_factor=0.5)
    serve(limiter, clock, "b/ckpt/", 3, every_s=0.01)
    clock.now += 10.0
    limiter.throttled(limiter.acquire("b/ckpt/", "GET"))
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    assert limiter.rate("b/ckpt/", "PUT") is None  # the retry's backoff alone slows down


def test_a_burst_after_an_idle_spell_is_measured_by_itself(clock: FakeClock) -> None:
    limiter = limiter_on(clock, decrease_factor=0.5)
    serve(limiter, clock, "b/ckpt/", 3, every_s=0.01)
    clock.now += 10.0
    serve(limiter, clock, "b/ckpt/", 100, every_s=0.01)  # 100 requests/s for 1 s
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    rate = limiter.rate("b/ckpt/", "PUT")
    assert rate is not None
    assert 45 <= rate <= 55


def test_once_limited_requests_are_spaced_by_the_rate(clock: FakeClock) -> None:
    limiter = limiter_on(clock, decrease_factor=0.5, increase_fraction=0.0)
    serve(limiter, clock, "b/ckpt/", 200, every_s=0.01)
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    rate = limiter.rate("b/ckpt/", "PUT")
    assert rate is not None
    started = clock.now
    for _ in range(100):  # as fast as they are let through
        limiter.succeeded(limiter.acquire("b/ckpt/", "PUT"))
    assert clock.now - started == pytest.approx(100 / rate, rel=0.02)


def test_one_burst_of_slowdowns_decreases_the_rate_once(clock: FakeClock) -> None:
    limiter = limiter_on(clock, decrease_factor=0.5)
    serve(limiter, clock, "b/ckpt/", 200, every_s=0.01)
    in_flight = [limiter.acquire("b/ckpt/", "PUT") for _ in range(16)]
    for grant in in_flight:
        limiter.throttled(grant)
    first = limiter.rate("b/ckpt/", "PUT")
    clock.now += 1
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))  # sent a second after the decrease
    second = limiter.rate("b/ckpt/", "PUT")
    assert first is not None
    assert second is not None
    assert 45 <= first <= 55
    assert second == pytest.approx(first * 0.5, rel=0.05)


def test_successes_raise_the_rate_additively(clock: FakeClock) -> None:
    limiter = limiter_on(clock, decrease_factor=0.5, increase_fraction=0.1)
    serve(limiter, clock, "b/ckpt/", 200, every_s=0.01)
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    low = limiter.rate("b/ckpt/", "PUT")
    assert low is not None
    started = clock.now
    for _ in range(int(low) * 5):  # about five seconds of requests at the allowed rate
        limiter.succeeded(limiter.acquire("b/ckpt/", "PUT"))
    high = limiter.rate("b/ckpt/", "PUT")
    assert high is not None
    gained_per_s = (high - low) / (clock.now - started)
    assert gained_per_s == pytest.approx(0.1 * low, rel=0.25)


def test_the_rate_never_falls_below_the_floor(clock: FakeClock) -> None:
    limiter = limiter_on(clock, min_rate=2.0, decrease_factor=0.5)
    serve(limiter, clock, "b/ckpt/", 100, every_s=0.01)
    for _ in range(30):
        limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
        clock.now += 1
    assert limiter.rate("b/ckpt/", "PUT") == 2.0


def test_a_slowdown_before_a_rate_was_served_sets_no_limit(clock: FakeClock) -> None:
    limiter = limiter_on(clock)
    serve(limiter, clock, "b/ckpt/", 3, every_s=0.01)  # three requests tell no rate
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    assert limiter.rate("b/ckpt/", "PUT") is None  # the retry's backoff alone slows down


def test_a_limit_ends_after_a_quiet_spell(clock: FakeClock) -> None:
    limiter = limiter_on(clock, quiet_s=30.0)
    serve(limiter, clock, "b/ckpt/", 100, every_s=0.01)
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))
    assert limiter.rate("b/ckpt/", "PUT") is not None
    clock.now += 31
    limiter.succeeded(limiter.acquire("b/ckpt/", "PUT"))
    assert limiter.rate("b/ckpt/", "PUT") is None


def test_jitter_stretches_a_wait_by_at_most_its_fraction(clock: FakeClock) -> None:
    for uniform, stretch in ((0.0, 1.0), (0.999, 1.2)):
        clock.slept.clear()
        limiter = limiter_on(clock, uniform=uniform, min_rate=10.0, jitter=0.2, increase_fraction=0.0)
        serve(limiter, clock, "b/ckpt/", 10, every_s=0.1)
        limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))  # 10 requests/s (the floor) from now on
        clock.slept.clear()
        limiter.acquire("b/ckpt/", "PUT")
        assert clock.slept == [pytest.approx(0.1 * stretch, rel=0.01)]


def test_prefixes_and_request_classes_are_limited_independently(clock: FakeClock) -> None:
    limiter = limiter_on(clock)
    for prefix in ("b/a/", "b/c/"):
        serve(limiter, clock, prefix, 100, every_s=0.01)
    limiter.throttled(limiter.acquire("b/a/", "PUT"))
    assert limiter.rate("b/a/", "PUT") is not None
    assert limiter.rate("b/a/", "GET") is None
    assert limiter.rate("b/c/", "PUT") is None
    assert limiter.rate("other-bucket/a/", "PUT") is None


def test_the_prefix_is_the_bucket_and_the_parent_directory() -> None:
    assert request_prefix("b", "ckpt/step=1/__0_0.distcp") == "b/ckpt/step=1/"
    assert request_prefix("b", "top.ckpt") == "b/"
    assert request_prefix("b", "ckpt/") == "b/ckpt/"
    assert request_prefix("b", None) == "b/"


def test_many_threads_share_one_token_bucket() -> None:
    settings = RateLimiterSettings(min_rate=2000.0, decrease_factor=1e-6, increase_fraction=0.0)
    limiter = RequestRateLimiter(RateTable.local(), settings)
    for _ in range(10):  # enough served to learn a rate from
        limiter.succeeded(limiter.acquire("b/x/", "PUT"))
    limiter.throttled(limiter.acquire("b/x/", "PUT"))  # 2,000 requests/s (the floor), a burst of 200
    errors: list[BaseException] = []

    def send(count: int) -> None:
        try:
            for _ in range(count):
                limiter.succeeded(limiter.acquire("b/x/", "PUT"))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(50,)) for _ in range(16)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in threads)
    assert elapsed >= (800 - 200) / 2000 * 0.95  # no request slipped past the bucket: no lost update
    assert limiter.rate("b/x/", "PUT") == 2000.0


CHILD = """
import os, sys
from s3_utils.request_rate import process_limiter
limiter = process_limiter()
print(limiter.table.path)
print(limiter.rate("b/shared/", "PUT"))
for _ in range(10):
    limiter.succeeded(limiter.acquire("b/child/", "GET"))
limiter.throttled(limiter.acquire("b/child/", "GET"))
"""


@pytest.fixture
def own_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[RateTable]:
    monkeypatch.delenv(TABLE_ENV_VAR, raising=False)  # a new table, not this process's
    table = open_shared_table()
    yield table
    table.close()


def test_a_child_process_joins_its_parents_table_through_the_environment(own_table: RateTable) -> None:
    assert own_table.shared
    assert os.environ[TABLE_ENV_VAR] == own_table.path
    parent = RequestRateLimiter(own_table, RateLimiterSettings(min_rate=3.0, decrease_factor=1e-6))
    for _ in range(10):  # enough served to learn a rate from
        parent.succeeded(parent.acquire("b/shared/", "PUT"))
    parent.throttled(parent.acquire("b/shared/", "PUT"))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60, check=True
    )

    path, rate = child.stdout.split()
    assert path == own_table.path
    assert float(rate) == 3.0  # what the parent learnt
    assert parent.rate("b/child/", "GET") is not None  # what the child learnt
    assert os.path.exists(own_table.path)  # the child does not remove its parent's table


def test_the_process_limiter_is_one_per_process() -> None:
    assert process_limiter() is process_limiter()


PUT_PER_S = 20.0
OBJECTS = 120
THREADS = 16


def save_many_small_objects(
    proxy: FaultProxy, bucket: str, prefix: str, adaptive: bool
) -> list[TransferStats]:
    """``OBJECTS`` PutObjects to one prefix from ``THREADS`` threads of one store; their stats."""
    proxy.set_request_rates(S3RequestRates(put_per_s=PUT_PER_S, get_per_s=50.0, burst_s=1.0))
    proxy.reset_stats()
    urls = [f"s3://{bucket}/{prefix}/object-{i}" for i in range(OBJECTS)]
    with (
        small_store(proxy.url, max_concurrency=THREADS, adaptive_request_rate=adaptive) as store,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        stats = list(pool.map(lambda url: store.upload_bytes(url, b"x" * 100), urls))
    assert proxy.counts()["PutObject"] == OBJECTS + proxy.throttled["PutObject"]
    return stats


def test_many_threads_saving_to_one_throttled_prefix_are_refused_far_less_with_the_limiter(
    s3_server: MotoServer, bucket: str
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        save_many_small_objects(proxy, bucket, "fixed-rate", adaptive=False)
        refused_without = proxy.throttled["PutObject"]
        stats = save_many_small_objects(proxy, bucket, "adaptive", adaptive=True)
        refused_with = proxy.throttled["PutObject"]

    print(f"{OBJECTS} PUTs needed: {refused_without} refused without the limiter, {refused_with} with it")
    assert refused_with <= 0.3 * OBJECTS
    assert refused_with < refused_without / 2
    assert sum(s.throttled for s in stats) == refused_with  # every SlowDown counted in the stats
    assert sum(s.rate_wait_s for s in stats) > 0


RANK = """
import sys
from s3_utils.request_rate import process_limiter
print(process_limiter().table.path, flush=True)
sys.stdin.readline()
"""


def test_the_local_ranks_of_one_job_share_one_table_and_its_first_rank_removes_it() -> None:
    env = {name: value for name, value in os.environ.items() if name != TABLE_ENV_VAR}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29999", PYTHONPATH=os.pathsep.join(sys.path))
    env["TORCHELASTIC_RUN_ID"] = f"test-{os.getpid()}-{time.monotonic_ns()}"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        paths = [rank.stdout.readline().strip() for rank in ranks]  # type: ignore[union-attr]
        assert paths[0] == paths[1]
        assert "job-" in paths[0]
        assert os.path.exists(paths[0])
    finally:
        for rank in ranks:
            rank.communicate("\n", timeout=60)
    assert not os.path.exists(paths[0])


# -- pacing to a known share of a prefix ------------------------------------------------------------


def start_times(
    limiter: RequestRateLimiter, clock: FakeClock, prefix: str, arrivals: list[float]
) -> list[float]:
    """When each request, arriving at ``arrivals`` (sorted), was let go: one thread, so a wait delays the
    requests after it as well."""
    started = []
    for arrival in arrivals:
        clock.now = max(clock.now, arrival)
        grant = limiter.acquire(prefix, "PUT")
        started.append(clock.now)
        limiter.succeeded(grant)
    return started


def test_node_share_is_the_prefix_rate_split_over_its_writers_times_the_local_ones() -> None:
    assert node_share(3500.0, writers=8, local_writers=8) == 3500.0
    assert node_share(10.0, writers=16, local_writers=8) == 5.0
    assert node_share(10.0, writers=4, local_writers=1) == 2.5
    for writers, local in ((0, 0), (4, 0), (4, 5)):
        with pytest.raises(ValueError, match="local_writers"):
            node_share(10.0, writers=writers, local_writers=local)


def test_a_shared_prefix_is_paced_from_the_first_request_with_a_burst(clock: FakeClock) -> None:
    limiter = limiter_on(clock, share_burst_s=0.5)
    limiter.share("b/ckpt/", "PUT", 10.0)
    started = start_times(limiter, clock, "b/ckpt/", [clock.now] * 15)

    assert limiter.rate("b/ckpt/", "PUT") is None  # no SlowDown: AIMD set nothing
    assert limiter.limit("b/ckpt/", "PUT") == 10.0
    assert started[:5] == [1000.0] * 5  # the burst: half a second of the share at once
    assert clock.slept == [pytest.approx(0.1)] * 10  # then one request every 1/10 s
    assert started[-1] == pytest.approx(1001.0)


def test_a_share_does_not_pace_other_prefixes_or_classes(clock: FakeClock) -> None:
    limiter = limiter_on(clock, share_burst_s=0.0)
    limiter.share("b/ckpt/", "PUT", 1.0)
    for prefix, request_class in (("b/other/", "PUT"), ("b/ckpt/", "GET")):
        for _ in range(5):
            limiter.succeeded(limiter.acquire(prefix, request_class))
    assert clock.slept == []


def test_a_slowdown_lowers_the_rate_below_the_share(clock: FakeClock) -> None:
    limiter = limiter_on(clock, share_burst_s=0.0, decrease_factor=0.5)
    limiter.share("b/ckpt/", "PUT", 10.0)
    start_times(limiter, clock, "b/ckpt/", [clock.now] * 20)  # 2 s at the share: 10/s served
    limiter.throttled(limiter.acquire("b/ckpt/", "PUT"))

    assert limiter.rate("b/ckpt/", "PUT") == pytest.approx(5.0, rel=0.1)
    assert limiter.limit("b/ckpt/", "PUT") == pytest.approx(5.0, rel=0.1)


def test_a_share_ends_when_the_last_of_its_writers_releases_it(clock: FakeClock) -> None:
    limiter = limiter_on(clock)
    limiter.share("b/ckpt/", "PUT", 10.0)
    limiter.share("b/ckpt/", "PUT", 10.0)  # a second local rank writing under the prefix
    limiter.release("b/ckpt/", "PUT")
    assert limiter.limit("b/ckpt/", "PUT") == 10.0
    limiter.release("b/ckpt/", "PUT")
    assert limiter.limit("b/ckpt/", "PUT") is None
    start_times(limiter, clock, "b/ckpt/", [clock.now] * 50)
    assert clock.slept == []


def test_a_share_its_killed_writers_never_released_ends_after_a_quiet_spell(clock: FakeClock) -> None:
    limiter = limiter_on(clock, quiet_s=30.0, share_burst_s=0.0)
    limiter.share("b/ckpt/", "PUT", 1.0)
    start_times(limiter, clock, "b/ckpt/", [clock.now] * 3)
    assert len(clock.slept) == 2
    clock.now += 31.0
    clock.slept.clear()
    start_times(limiter, clock, "b/ckpt/", [clock.now] * 10)
    assert clock.slept == []
    assert limiter.limit("b/ckpt/", "PUT") is None


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=1.0, max_value=200.0),
    burst_s=st.floats(min_value=0.0, max_value=1.0),
    jitter=st.floats(min_value=0.0, max_value=0.5),
    uniform=st.floats(min_value=0.0, max_value=0.999),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=80),
)
def test_requests_to_a_shared_prefix_never_exceed_the_share_over_any_window(
    rate: float, burst_s: float, jitter: float, uniform: float, gaps: list[float]
) -> None:
    """Over any window, at most the burst plus the share times the window's length; jitter (which delays
    a start by at most ``jitter`` of one spacing) can bring a start closer to the next by that much."""
    clock = FakeClock()
    limiter = limiter_on(clock, uniform=uniform, share_burst_s=burst_s, jitter=jitter)
    limiter.share("b/ckpt/", "PUT", rate)
    arrivals = [clock.now + sum(gaps[: i + 1]) for i in range(len(gaps))]
    started = start_times(limiter, clock, "b/ckpt/", arrivals)

    burst = max(1.0, rate * burst_s)
    for first in range(len(started)):
        for last in range(first, len(started)):
            assert last - first + 1 <= burst + rate * (started[last] - started[first]) + jitter + 1e-6
