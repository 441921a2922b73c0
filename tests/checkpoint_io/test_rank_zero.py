"""share_from_rank_zero: rank 0 computes once; every rank gets its result or raises its error."""

from __future__ import annotations

import json
import pathlib

import pytest

from checkpoint_io.rank_zero_targets import share_outcomes
from s3_checkpoint_io.rank_zero import share_from_rank_zero
from support.ranks import launch

pytestmark = pytest.mark.timeout(120)


def test_every_rank_gets_rank_zeros_result_or_an_equivalent_error(tmp_path: pathlib.Path) -> None:
    launch(share_outcomes, 3, [str(tmp_path)], timeout_s=90)

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(3)]
    assert [r["result"] for r in results] == ["from rank 0"] * 3
    assert [r["calls"] for r in results] == [[0], [], []]  # computed on rank 0 only
    for rank, result in enumerate(results):
        assert result["missing"]["type"] == "FileNotFoundError"
        assert result["missing"]["message"] == "s3://b/k: no such key"
        assert "PermissionError" in result["denied"]["bases"]
        assert "s3://b/k: access denied" in result["denied"]["message"]
        if rank:
            assert "LocalDenied" in result["denied"]["message"]  # its type, named, though it cannot travel
            assert any("raised on global rank 0 while a test" in n for n in result["missing"]["notes"])


def test_without_a_process_group_the_work_is_simply_done() -> None:
    assert share_from_rank_zero(lambda: 42, what="a test") == 42
    with pytest.raises(KeyError):
        share_from_rank_zero(lambda: {}["k"], what="a test")
