"""A many-rank sharded save paced to its share of a prefix's request rate: real gloo ranks saving
through a proxy that emulates S3's per-prefix limits (503 SlowDown past them)."""

from __future__ import annotations

import pytest

from checkpoint_io.dcp import pacing_targets
from s3_utils.limits import PUT_REQUESTS_PER_PREFIX_PER_S
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.request_rates import S3RequestRates

pytestmark = [pytest.mark.slow]

RANKS = 4
PUT_PER_S = 4.0  # the emulated prefix's rate: a few seconds for the save's ~20 PUT-class requests


def refused_and_needed(proxy: FaultProxy, url: str, put_per_s: float) -> tuple[int, int]:
    """Save on ``RANKS`` ranks with writers told ``put_per_s``; the PUT-class requests the proxy
    refused, and those it served (what the save needed)."""
    proxy.set_request_rates(S3RequestRates(put_per_s=PUT_PER_S, get_per_s=50.0, burst_s=1.0))
    proxy.reset_stats()
    launch(pacing_targets.save_flat, world_size=RANKS, args=[url, proxy.url, str(put_per_s)], timeout_s=180)
    counts = proxy.emulator.counts()["PUT"]  # type: ignore[union-attr]
    return counts["throttled"], counts["admitted"]


def test_a_flat_save_on_four_ranks_paced_to_its_share_draws_few_slowdowns_and_more_unpaced(
    fault_proxy: FaultProxy, bucket: str
) -> None:
    refused_unpaced, needed_unpaced = refused_and_needed(
        fault_proxy,
        f"s3://{bucket}/unpaced",
        PUT_REQUESTS_PER_PREFIX_PER_S,  # S3's rate: never binds here
    )
    refused_paced, needed_paced = refused_and_needed(fault_proxy, f"s3://{bucket}/paced", PUT_PER_S)

    print(f"needed {needed_paced}: refused {refused_paced} paced, {refused_unpaced} unpaced")
    assert needed_paced == needed_unpaced >= RANKS * 5  # create, three parts, complete per rank
    assert refused_paced <= 0.15 * needed_paced
    assert refused_unpaced > 0.15 * needed_unpaced
    assert refused_unpaced > refused_paced
