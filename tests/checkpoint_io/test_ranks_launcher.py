"""The multi-rank launcher (support.ranks) that the distributed tests build on."""

from __future__ import annotations

import pathlib
import time

import pytest

from checkpoint_io.rank_targets import all_reduce_rank_ids, rank_one_fails_while_rank_zero_hangs
from support.ranks import RanksFailed, launch

pytestmark = pytest.mark.slow


def test_ranks_form_one_gloo_group_on_loopback(tmp_path: pathlib.Path) -> None:
    results = launch(all_reduce_rank_ids, world_size=2, args=[str(tmp_path)], timeout_s=90)
    assert [r.returncode for r in results] == [0, 0]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["3", "3"]


def test_a_failing_rank_stops_the_launch_instead_of_hanging_it() -> None:
    started = time.monotonic()
    with pytest.raises(RanksFailed, match="rank 1 failed on purpose") as caught:
        launch(rank_one_fails_while_rank_zero_hangs, world_size=2, timeout_s=120)
    # rank 0 would have slept 600 s: the launcher killed it once the grace period after rank 1's failure ended
    assert time.monotonic() - started < 60
    assert "rank 0 exited -9" in str(caught.value)
