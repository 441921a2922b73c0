"""S3StorageReader(process_group=...): one metadata GET per load without reading torch's internals;
without it, the stack search for dcp.load's group warns once when it finds nothing."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import pytest
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from checkpoint_io.dcp.dcp_group_targets import load_with_explicit_groups
from checkpoint_io.dcp.dcp_rank_targets import plain_state
from s3_checkpoint_io.dcp import S3StorageWriter, _torch_load_frame
from support.fault_proxy import FaultProxy
from support.ranks import launch


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_a_reader_given_the_group_reads_the_metadata_once_per_load(
    bucket: str, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    url = f"s3://{bucket}/run/explicit"
    dcp.save(plain_state(1), storage_writer=S3StorageWriter(url), no_dist=True)

    launch(
        load_with_explicit_groups,
        world_size=3,
        args=[url, str(tmp_path), fault_proxy.url],
        timeout_s=120,
    )
    for rank in range(3):
        checks = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert checks == ({"world": True} if rank == 0 else {"world": True, "subgroup": True}), rank
    metadata_gets = [r for r in fault_proxy.requests if r.path.endswith("/.metadata") and r.method == "GET"]
    assert len(metadata_gets) == 2  # one for the load on WORLD, one for the load on the subgroup


def test_no_load_group_on_the_stack_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(_torch_load_frame, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=_torch_load_frame.__name__):
        assert _torch_load_frame.group_of_running_load() is None
        assert _torch_load_frame.group_of_running_load() is None
    warnings = [r for r in caplog.records if r.name == _torch_load_frame.__name__]
    assert len(warnings) == 1
    assert "tested on torch 2.13.0" in warnings[0].getMessage()
    assert "process_group=" in warnings[0].getMessage()


def test_one_rank_does_not_warn(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 1)
    monkeypatch.setattr(_torch_load_frame, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=_torch_load_frame.__name__):
        assert _torch_load_frame.group_of_running_load() is None
    assert not [r for r in caplog.records if r.name == _torch_load_frame.__name__]


def test_the_reader_still_takes_its_old_arguments() -> None:
    from s3_checkpoint_io.dcp import S3StorageReader

    reader: Any = S3StorageReader(
        "s3://bucket/p", chunk_size_MB=8, max_concurrency=2, endpoint_url="http://x"
    )
    assert reader.settings.transfer_config.max_concurrency == 2
