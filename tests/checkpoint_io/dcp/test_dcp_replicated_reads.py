"""Replicated items of a sharded load are read from S3 once per load and broadcast (gloo CPU ranks,
real S3 server, real faults): the bytes fetched, every rank's tensors, a reading rank killed mid-read,
a read refused by S3."""

from __future__ import annotations

import json
import os
import pathlib
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

from checkpoint_io.dcp import replicated_targets
from checkpoint_io.dcp.replicated_targets import KILLED_RANK, RANKS, checkpoint_bytes, full_state
from s3_checkpoint_io.dcp import S3StorageWriter
from s3_checkpoint_io.dcp._records import NodeMemory
from s3_checkpoint_io.dcp._replicated_plan import plan_shared_files
from s3_checkpoint_io.dcp._stored_items import StoredItem
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_server import MotoServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]


@pytest.fixture
def second_proxy(s3_server: MotoServer) -> Iterator[FaultProxy]:
    """Another proxy in front of the same server, so that two loads' requests are counted apart."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy


def _shard_gets(proxy: FaultProxy) -> int:
    return sum(
        1
        for r in proxy.requests
        if r.operation == "GetObject" and ".distcp" in urllib.parse.unquote(r.path) and r.status < 300
    )


def _outcomes(tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(RANKS)]


def _shared_files_gone(paths: list[str]) -> None:
    """The load shared replicated items through files, and none of them is left in /dev/shm."""
    assert paths, "the load shared no replicated items"
    assert all(path.startswith("/dev/shm/") for path in paths), paths
    assert not [path for path in paths if os.path.exists(path)], paths


def test_a_ddp_state_loaded_on_three_ranks_is_fetched_once_and_every_rank_gets_its_tensors(
    bucket: str, tmp_path: pathlib.Path, fault_proxy: FaultProxy, second_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/ddp"
    launch(
        replicated_targets.save_then_load_twice,
        world_size=RANKS,
        args=[url, fault_proxy.url, second_proxy.url, str(tmp_path)],
        timeout_s=120,
    )
    outcomes = _outcomes(tmp_path)
    assert all(o["shared"]["equal"] and o["each"]["equal"] for o in outcomes), outcomes
    total = checkpoint_bytes()
    shared = sum(o["shared"]["bytes_read"] for o in outcomes)
    each = sum(o["each"]["bytes_read"] for o in outcomes)
    # every byte once (plus the small gaps a merged read spans), against each rank reading all it loads
    assert total <= shared < 1.1 * total, (shared, total)
    assert each > 2.5 * total, (each, total)
    # the reads are spread over the ranks: none reads more than half of the checkpoint
    assert max(o["shared"]["bytes_read"] for o in outcomes) < 0.5 * total, outcomes
    assert _shard_gets(fault_proxy) < _shard_gets(second_proxy) / 2, (
        _shard_gets(fault_proxy),
        _shard_gets(second_proxy),
    )
    # every rank was given the same files, and they were removed; the plain load planned none
    assert len({tuple(o["shared"]["shared_paths"]) for o in outcomes}) == 1, outcomes
    _shared_files_gone(outcomes[0]["shared"]["shared_paths"])
    assert all(o["each"]["shared_paths"] == [] for o in outcomes), outcomes


def test_a_reading_rank_killed_mid_read_fails_the_others_soon_saying_why(
    bucket: str, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/killed"
    dcp.save(full_state(), storage_writer=S3StorageWriter(url, chunk_size_MB=5), no_dist=True)
    fault_proxy.add_fault("GetObject", "delay", delay_s=1.5, path_contains=".distcp")

    results = launch(
        replicated_targets.load_and_record_failure,
        world_size=RANKS,
        args=[url, fault_proxy.url, str(tmp_path), "1"],
        timeout_s=90,
        check=False,
    )

    assert results[KILLED_RANK].returncode == -9
    for rank in set(range(RANKS)) - {KILLED_RANK}:
        # the rank raised on its own (launch kills a straggler 5 s after the first rank died)
        outcome = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert outcome["raised"] is not None, (rank, outcome)
        assert "could not exchange the replicated items" in results[rank].output, results[rank].output[-3000:]
        assert url in results[rank].output
        # the killed rank read for the others, and its error names the readers
        assert KILLED_RANK in outcome["readers"], outcome
        assert f"that ranks {outcome['readers']} read" in results[rank].output
        # the killed rank's file (made before it died) was removed by the survivors
        _shared_files_gone(outcome["shared_paths"])


def test_a_read_refused_by_s3_fails_every_rank_naming_the_reading_rank(
    bucket: str, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/denied"
    dcp.save(full_state(), storage_writer=S3StorageWriter(url, chunk_size_MB=5), no_dist=True)
    fault_proxy.add_fault("GetObject", "access_denied", times=1, path_contains=".distcp")

    launch(
        replicated_targets.load_and_record_failure,
        world_size=RANKS,
        args=[url, fault_proxy.url, str(tmp_path), "0"],
        timeout_s=90,
        check=False,
    )

    outcomes = _outcomes(tmp_path)
    assert all(o["raised"] == "CheckpointException" for o in outcomes), outcomes
    # DCP gathers every rank's error: the reading rank's own, and the others' naming it
    for outcome in outcomes:
        assert "AccessDenied" in outcome["message"] or "Access Denied" in outcome["message"], outcome
        assert f"of the load of {url}" in outcome["message"], outcome
        assert "failed reading the items it reads for every rank" in outcome["message"], outcome
    _shared_files_gone(outcomes[0]["shared_paths"])


def _read_item(fqn: str, elements: int) -> ReadItem:
    index = MetadataIndex(fqn, torch.Size([0]))
    size = torch.Size([elements])
    return ReadItem(LoadItemType.TENSOR, index, torch.Size([0]), index, torch.Size([0]), size)


def test_the_plan_gives_each_replicated_item_one_reader_and_sends_it_only_to_the_ranks_that_want_it() -> None:
    # HSDP-like, 4 ranks: a replica group per shard (ranks 0 and 2 hold shard 0, 1 and 3 shard 1), plus
    # one tensor every rank loads and one only rank 3 loads
    elements = {"shard0.w": 1000, "shard1.w": 1000, "norm": 10, "rank3.extra": 500}
    locations = {
        MetadataIndex(fqn, torch.Size([0])): StoredItem(f"{i}.distcp", 0, n * 4, 0, torch.float32, (n,))
        for i, (fqn, n) in enumerate(elements.items())
    }
    wants = {
        0: ["shard0.w", "norm"],
        1: ["shard1.w", "norm"],
        2: ["shard0.w", "norm"],
        3: ["shard1.w", "norm", "rank3.extra"],
    }
    plans = [LoadPlan([_read_item(fqn, elements[fqn]) for fqn in wants[rank]]) for rank in range(4)]

    one_node = [NodeMemory("host:1", 2**30)] * 4
    files = plan_shared_files(plans, one_node, locations, "t")

    by_fqn = {shared.storage_index.fqn: f for f in files for shared in f.items}
    assert set(by_fqn) == {"shard0.w", "shard1.w", "norm"}  # rank3.extra: one rank reads it itself
    for fqn, file in by_fqn.items():
        wanting = {rank for rank in range(4) if fqn in wants[rank]}
        assert file.reader in wanting
        assert set(file.receivers) == wanting - {file.reader}, fqn
    # the two shards go to different readers, and rank 3 (which reads rank3.extra) reads neither
    assert by_fqn["shard0.w"].reader in (0, 2)
    assert by_fqn["shard1.w"].reader == 1
    assert len({f.name for f in files}) == len(files)  # one name per file
    assert plan_shared_files(plans, one_node, locations, "t") == files  # deterministic


def test_each_node_reads_its_replicated_items_once_and_a_node_without_room_reads_as_if_unshared() -> None:
    # two nodes of two ranks: every rank loads "w" and "norm"; "x" is loaded by one rank of each node
    elements = {"w": 1000, "norm": 10, "x": 500}
    locations = {
        MetadataIndex(fqn, torch.Size([0])): StoredItem(f"{i}.distcp", 0, n * 4, 0, torch.float32, (n,))
        for i, (fqn, n) in enumerate(elements.items())
    }
    wants = {0: ["w", "norm", "x"], 1: ["w", "norm"], 2: ["w", "norm"], 3: ["w", "norm", "x"]}
    plans = [LoadPlan([_read_item(fqn, elements[fqn]) for fqn in wants[rank]]) for rank in range(4)]
    node_of = {0: "a", 1: "a", 2: "b", 3: "b"}
    nodes = [NodeMemory(f"host-{node_of[rank]}:1", 2**30) for rank in range(4)]

    files = plan_shared_files(plans, nodes, locations, "t")

    for fqn in ("w", "norm"):
        holding = [f for f in files if fqn in {s.storage_index.fqn for s in f.items}]
        # one file per node, read by one of its ranks for the other: nothing crosses nodes
        assert sorted(node_of[f.reader] for f in holding) == ["a", "b"], (fqn, holding)
        for f in holding:
            assert [node_of[r] for r in f.receivers] == [node_of[f.reader]], f
    assert "x" not in {s.storage_index.fqn for f in files for s in f.items}  # one rank per node wants it

    # node b's shared memory cannot hold its files: its ranks read all they load, node a still shares
    cramped = [*nodes[:2], NodeMemory("host-b:1", 100), NodeMemory("host-b:1", 2**30)]
    files = plan_shared_files(plans, cramped, locations, "t")
    assert files
    assert {node_of[f.reader] for f in files} == {"a"}, files
