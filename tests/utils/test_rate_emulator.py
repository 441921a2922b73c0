"""The request-rate emulator's token buckets, per partition and class, on a fake clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3_utils.limits import GET_REQUESTS_PER_PREFIX_PER_S, PUT_REQUESTS_PER_PREFIX_PER_S
from support.fault_proxy import OPERATIONS, rate_key
from support.request_rates import OPERATION_CLASSES, RequestRateEmulator, S3RequestRates


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def emulator(
    put_per_s: float = 10, get_per_s: float = 20, **rates: float
) -> tuple[RequestRateEmulator, FakeClock]:
    clock = FakeClock()
    return RequestRateEmulator(S3RequestRates(put_per_s, get_per_s, **rates), clock=clock), clock


def admitted(emulator: RequestRateEmulator, operation: str, key: str, requests: int) -> int:
    return sum(emulator.admit(operation, key) for _ in range(requests))


def test_the_defaults_are_s3s_limits_and_scaled_multiplies_both_rates() -> None:
    rates = S3RequestRates()
    assert (rates.put_per_s, rates.get_per_s) == (
        PUT_REQUESTS_PER_PREFIX_PER_S,
        GET_REQUESTS_PER_PREFIX_PER_S,
    )
    small = rates.scaled(0.01)
    assert (small.put_per_s, small.get_per_s) == pytest.approx((35, 55))
    assert (small.burst_s, small.split_after_s) == (rates.burst_s, rates.split_after_s)


@pytest.mark.parametrize(
    ("field", "value"), [("put_per_s", 0), ("get_per_s", -1), ("burst_s", 0), ("split_after_s", 0)]
)
def test_rates_that_are_not_positive_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field}={value}"):
        S3RequestRates(**{field: value})


def test_a_scale_factor_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="factor=0"):
        S3RequestRates().scaled(0)


def test_a_quiet_partition_admits_its_burst_then_throttles() -> None:
    rates, _ = emulator(put_per_s=10, burst_s=0.5)
    assert admitted(rates, "PutObject", "b/ckpt/a", 8) == 5
    assert rates.counts() == {"PUT": {"admitted": 5, "throttled": 3}, "GET": {"admitted": 0, "throttled": 0}}


def test_the_bucket_refills_at_the_rate_and_sustains_it() -> None:
    rates, clock = emulator(put_per_s=10, burst_s=1)
    assert admitted(rates, "UploadPart", "b/ckpt/a", 100) == 10
    clock.now = 0.25
    assert admitted(rates, "UploadPart", "b/ckpt/a", 100) == 2  # 2.5 tokens refilled
    clock.now = 10.0
    assert admitted(rates, "UploadPart", "b/ckpt/a", 100) == 10  # refilled to the burst, not beyond
    sustained = 0
    for step in range(1, 101):  # 10 s at 100 requests/s: the rate, not the offered load, passes
        clock.now = 10.0 + step * 0.1
        sustained += admitted(rates, "UploadPart", "b/ckpt/a", 10)
    assert sustained == 100


def test_the_put_and_get_classes_have_buckets_of_their_own() -> None:
    rates, _ = emulator(put_per_s=2, get_per_s=3)
    assert admitted(rates, "PutObject", "b/p/k", 5) == 2
    assert admitted(rates, "GetObject", "b/p/k", 5) == 3
    assert admitted(rates, "DeleteObject", "b/p/k", 1) == 0  # a DELETE is in the PUT class
    assert admitted(rates, "HeadObject", "b/p/k", 1) == 0
    assert admitted(rates, "CreateBucket", "b/p/k", 10) == 10  # not limited


def test_every_s3_operation_the_proxy_names_has_a_known_class() -> None:
    assert set(OPERATION_CLASSES) <= set(OPERATIONS)
    assert set(OPERATION_CLASSES.values()) == {"PUT", "GET"}
    assert {op for op, c in OPERATION_CLASSES.items() if c == "PUT"} >= {"CopyObject", "DeleteObjects"}


def test_rank_hash_prefixes_are_partitions_of_their_own() -> None:
    rates, _ = emulator(put_per_s=3)
    assert rates.partition_of("b/3f2a/rank0/model.pt") == "b/3f2a/rank0/"
    assert rates.partition_of("b/top.pt") == "b/"
    for prefix in ("3f2a", "91c0", "e7d4"):
        assert admitted(rates, "PutObject", f"b/{prefix}/rank/shard", 5) == 3
    assert admitted(rates, "PutObject", "other-bucket/3f2a/rank/shard", 5) == 3


def test_split_model_starts_as_one_partition_and_splits_a_prefix_after_sustained_load() -> None:
    rates, clock = emulator(put_per_s=10, burst_s=1, split_after_s=5)
    assert rates.partition_of("b/hot/k") == rates.partition_of("b/cold/k") == "b/"
    assert admitted(rates, "PutObject", "b/hot/k", 10) == 10
    assert admitted(rates, "PutObject", "b/cold/k", 1) == 0  # the one shared partition is spent

    for step in range(1, 50):  # 4.9 s of 20/s on "hot/": busy, but not yet for 5 s
        clock.now = step * 0.1
        admitted(rates, "PutObject", "b/hot/k", 2)
    assert rates.partition_of("b/hot/k") == "b/"
    clock.now = 5.0
    assert admitted(rates, "PutObject", "b/hot/k", 1) == 1  # 5 s busy: served, then split off

    assert rates.partition_of("b/hot/k") == "b/hot/"
    assert rates.partition_of("b/cold/k") == "b/"
    assert admitted(rates, "PutObject", "b/hot/k", 20) == 10  # a fresh partition: its own full burst
    clock.now = 5.2
    assert admitted(rates, "PutObject", "b/cold/k", 1) == 1  # no longer shares with "hot/"


def test_split_model_load_with_quiet_gaps_is_not_sustained() -> None:
    rates, clock = emulator(put_per_s=10, burst_s=1, split_after_s=3)
    for second in range(10):  # a 1 s burst every 2 s drains the partition, then it recovers
        clock.now = second * 2.0
        admitted(rates, "PutObject", "b/bursty/k", 30)
    assert rates.partition_of("b/bursty/k") == "b/"


def test_reset_forgets_buckets_splits_and_counts() -> None:
    rates, clock = emulator(put_per_s=10, split_after_s=1)
    for step in range(30):
        clock.now = step * 0.1
        admitted(rates, "PutObject", "b/hot/k", 5)
    assert rates.partition_of("b/hot/k") == "b/hot/"
    rates.reset()
    assert rates.partition_of("b/hot/k") == "b/"
    assert rates.counts()["PUT"] == {"admitted": 0, "throttled": 0}
    assert admitted(rates, "PutObject", "b/hot/k", 20) == 10


def test_concurrent_callers_never_take_more_than_the_burst() -> None:
    rates, _ = emulator(put_per_s=100, burst_s=1)
    results: list[bool] = []
    lock = threading.Lock()

    def call() -> None:
        mine = [rates.admit("PutObject", "b/p/k") for _ in range(200)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(results) == 100
    assert rates.counts()["PUT"] == {"admitted": 100, "throttled": 1500}


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 1000),
    burst_s=st.floats(0.01, 5),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
)
def test_admitted_over_any_span_is_at_most_rate_times_span_plus_the_burst(
    rate: float, burst_s: float, gaps: list[float]
) -> None:
    rates, clock = emulator(put_per_s=rate, burst_s=burst_s)
    passed = 0
    for gap in gaps:
        clock.now += gap
        passed += rates.admit("PutObject", "b/p/k")
    assert passed <= rate * clock.now + max(1.0, rate * burst_s) + 1e-9
    assert passed >= 1  # the first request meets a full bucket


@pytest.mark.parametrize(
    ("path", "query", "partition"),
    [
        ("/bkt/3f2a/rank0/model.pt", {}, "bkt/3f2a/rank0/"),
        ("/bkt/top%20level.pt", {}, "bkt/"),
        ("/bkt", {"list-type": "2", "prefix": "ckpt/step-9/"}, "bkt/ckpt/step-9/"),
        ("/bkt", {"delete": ""}, "bkt/"),
    ],
)
def test_the_proxy_charges_a_request_to_the_partition_of_its_key_or_listed_prefix(
    path: str, query: dict[str, str], partition: str
) -> None:
    rates, _ = emulator()
    assert rates.partition_of(rate_key(path, query)) == partition
