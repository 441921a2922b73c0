"""Fabric with S3FabricModelParallelStrategy (FSDP2, 2 gloo CPU ranks): ``fabric.save``/``load`` on s3://.

A Fabric loop saves model and optimizer shards plus its own values as one DCP checkpoint (one commit, no
``meta.pt``); a new run loads it and continues exactly as the uninterrupted run; a save that S3 refuses
raises on every rank, commits nothing, and the previous checkpoint still loads.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch

from checkpoint_io.strategies.fabric_sharded_targets import first_run, resume_then_fail_a_save
from s3_utils.sharded import COMMIT_NAME
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _same(out: pathlib.Path, name: str, other: str, rank: int) -> None:
    expected, got = torch.load(out / f"{name}-rank{rank}.pt"), torch.load(out / f"{other}-rank{rank}.pt")
    assert expected.keys() == got.keys()
    assert any(key.endswith("exp_avg_sq") for key in got), got.keys()  # optimizer state is compared too
    for key, value in expected.items():
        assert torch.equal(value, got[key]), (rank, key, name, other)


def test_a_sharded_fabric_loop_resumes_from_s3_and_a_refused_save_keeps_the_previous(
    bucket: str, s3_client: Any, tmp_path: pathlib.Path, fault_proxy: FaultProxy
) -> None:
    dirpath = f"s3://{bucket}/fabric"
    launch(first_run, world_size=2, args=[dirpath, str(tmp_path)], timeout_s=90)
    names = {key.rpartition("/")[2] for key in object_keys(s3_client, bucket, "fabric/latest.ckpt/")}
    assert COMMIT_NAME in names, names
    assert "meta.pt" not in names, names
    assert len([name for name in names if name.endswith(".distcp")]) == 2, names
    committed = s3_client.head_object(Bucket=bucket, Key=f"fabric/latest.ckpt/{COMMIT_NAME}")["ETag"]

    fault_proxy.add_fault("PutObject", "access_denied")  # these small shards' PUTs and the commit PUT
    proxied = {"AWS_ENDPOINT_URL": fault_proxy.url, "AWS_ENDPOINT_URL_S3": fault_proxy.url}
    launch(resume_then_fail_a_save, world_size=2, args=[dirpath, str(tmp_path)], env=proxied)

    assert fault_proxy.injected >= 1
    assert s3_client.head_object(Bucket=bucket, Key=f"fabric/latest.ckpt/{COMMIT_NAME}")["ETag"] == committed
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["remainder"] == {}, report
        assert report["step"] == report["step_again"] == 3, report
        assert "S3AccessDeniedError" in report["error"], report  # raised on every rank, naming S3's refusal
        _same(tmp_path, "saved", "loaded", rank)  # resume: identical weights and optimizer state
        _same(tmp_path, "uninterrupted", "resumed", rank)  # and training continues exactly
        _same(tmp_path, "saved", "reloaded", rank)  # the refused save left the previous checkpoint


def test_the_fsdp1_fabric_strategy_refuses_a_full_state_dict_on_s3_and_a_non_s3_plugin(
    s3_client: Any, bucket: str
) -> None:
    """FSDP1 needs CUDA, so only its checks run here; its save and load share the FSDP2 class's parts."""
    from lightning.fabric.plugins import TorchCheckpointIO

    from s3_checkpoint_io import S3CheckpointIO
    from s3_checkpoint_io.strategies import S3FabricFSDPStrategy

    strategy = S3FabricFSDPStrategy(state_dict_type="full")
    with pytest.raises(ValueError, match="state_dict_type='sharded'"):
        strategy.save_checkpoint(f"s3://{bucket}/fabric/x.ckpt", {"step": 1})
    assert object_keys(s3_client, bucket, "fabric/") == []
    with pytest.raises(TypeError, match="only an S3CheckpointIO"):
        strategy.checkpoint_io = TorchCheckpointIO()
    io = S3CheckpointIO(f"s3://{bucket}/fabric")
    strategy.checkpoint_io = io
    assert strategy.checkpoint_io is io
    io.teardown()
