"""read_once_per_node without a Trainer: one download per node (two nodes played by one machine), the
same bytes on every rank, a missing object raised on every rank (real gloo ranks, moto over HTTP)."""

from __future__ import annotations

import io
import pathlib
import urllib.parse
from typing import Any

import pytest
import torch

from checkpoint_io.lit_helpers import assert_same
from checkpoint_io.node_reads_targets import load_as_two_hosts, load_on_every_rank
from s3_checkpoint_io.one_rank import node_readers
from support.fault_proxy import FaultProxy
from support.ranks import launch

pytestmark = pytest.mark.timeout(120)


def _requests_for(proxy: FaultProxy, operation: str, key: str) -> list[str]:
    return [
        r.operation
        for r in proxy.requests
        if r.operation == operation and urllib.parse.unquote(r.path).endswith(f"/{key}")
    ]


def test_ranks_are_grouped_by_host_and_each_hosts_lowest_rank_reads() -> None:
    assert node_readers(["a", "a", "b", "b"]) == [[0, 1], [2, 3]]
    assert node_readers(["b", "a", "b", "a"]) == [[0, 2], [1, 3]]
    assert node_readers(["only"] * 3) == [[0, 1, 2]]


def test_two_nodes_download_once_each_and_every_rank_gets_the_same_object(
    s3_server: Any, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    generator = torch.Generator().manual_seed(0)
    saved = {"weights": torch.randn(3 * 2**20, generator=generator), "step": 7}  # 12 MiB: 3 ranges
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    s3_client.put_object(Bucket=bucket, Key="run/model.ckpt", Body=buffer.getvalue())
    url = f"s3://{bucket}/run/model.ckpt"

    with FaultProxy(s3_server.endpoint_url) as proxy:
        launch(load_as_two_hosts, 4, [url, proxy.url, str(tmp_path)], timeout_s=90)
        heads = _requests_for(proxy, "HeadObject", "run/model.ckpt")
        gets = _requests_for(proxy, "GetObject", "run/model.ckpt")

    assert (len(heads), len(gets)) == (2, 6)  # one download per node (ranks 0 and 2), not one per rank
    for rank in range(4):
        assert_same(saved, torch.load(tmp_path / f"rank{rank}.pt"), f"rank {rank}")


def test_a_missing_checkpoint_is_file_not_found_on_every_rank_after_one_head(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/nothing-here.ckpt"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        launch(load_on_every_rank, 2, [url, proxy.url, str(tmp_path)], timeout_s=60)
        heads = _requests_for(proxy, "HeadObject", "run/nothing-here.ckpt")

    assert len(heads) == 1
    for rank in range(2):
        kind, is_not_found, message = (tmp_path / f"rank{rank}.txt").read_text().split("|", 2)
        assert (kind, is_not_found) == ("FileNotFoundError", "True")
        assert f"checkpoint not found: no object at {url}" in message
        assert ("raised on global rank 0" in message) == (rank == 1)
