"""Resume discovery: which checkpoint is chosen, what is refused, and that it costs one listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rank_env import rank_pythonpath
from rank_probes import broadcast_main, check_resume_main

from nemo_s3_integration import find_resume_checkpoint
from s3_checkpoint_io.rank_zero import broadcast_object, is_global_rank_zero
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_server import MotoServer
from support.stores import small_store

pytestmark = pytest.mark.timeout(120)


def _put(client: Any, bucket_name: str, *names: str) -> str:
    for name in names:
        client.put_object(Bucket=bucket_name, Key=f"run/checkpoints/{name}", Body=b"checkpoint")
    return f"s3://{bucket_name}/run/checkpoints"


def test_end_checkpoint_with_the_highest_step_wins_over_newer_uploads(s3_client: Any, bucket: str) -> None:
    # Uploaded highest step first, so modification times point the other way.
    dirpath = _put(
        s3_client,
        bucket,
        "gpt--step=900-end.ckpt",
        "gpt--step=1000-last.ckpt",
        "gpt--step=200-end.ckpt",
        "gpt--step=950-end.ckpt",
        "gpt--step=950-end-unfinished",
        "gpt--step=100-last.ckpt",
    )
    chosen = find_resume_checkpoint(dirpath, resume_past_end=True)
    assert chosen == f"{dirpath}/gpt--step=900-end.ckpt"


def test_last_checkpoint_with_the_highest_step_is_chosen_without_end_checkpoints(
    s3_client: Any, bucket: str
) -> None:
    dirpath = _put(
        s3_client, bucket, "gpt--step=90-last.ckpt", "gpt--step=100-last.ckpt", "gpt--step=95.ckpt"
    )
    assert find_resume_checkpoint(dirpath) == f"{dirpath}/gpt--step=100-last.ckpt"


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("gpt--val_loss=0.1000-epoch=5-last.ckpt", "gpt--val_loss=0.2000-epoch=3-last.ckpt"),
        ("gpt--val_loss=0.3000-epoch=1000-last.ckpt", "gpt--val_loss=0.4000-epoch=900-last.ckpt"),
    ],
)
def test_nemo_default_names_without_a_step_resume_from_the_highest_epoch(
    s3_client: Any, bucket: str, older: str, newer: str
) -> None:
    # NeMo's default filename is {name}--{val_loss:.4f}-{epoch}: no step. The checkpoint resumed from is
    # never deleted, so after one resume there are two -last checkpoints; the higher epoch is the newer.
    dirpath = _put(s3_client, bucket, older, newer)
    assert find_resume_checkpoint(dirpath) == f"{dirpath}/{older}"


def test_objects_beside_the_dirpath_are_not_candidates(s3_client: Any, bucket: str) -> None:
    dirpath = _put(s3_client, bucket, "gpt--step=5-last.ckpt")
    s3_client.put_object(Bucket=bucket, Key="run/checkpoints-old/gpt--step=99-last.ckpt", Body=b"x")
    assert find_resume_checkpoint(dirpath) == f"{dirpath}/gpt--step=5-last.ckpt"


def test_a_finished_run_is_not_resumed_unless_asked(s3_client: Any, bucket: str) -> None:
    dirpath = _put(s3_client, bucket, "gpt--step=9-end.ckpt", "gpt--step=9-last.ckpt")
    with pytest.raises(ValueError, match=r"already finished; set exp_manager\.resume_past_end=True"):
        find_resume_checkpoint(dirpath)


def test_nothing_to_resume_is_an_error_or_a_fresh_start(s3_client: Any, bucket: str) -> None:
    dirpath = _put(
        s3_client, bucket, "gpt--step=3.ckpt", "gpt--step=4-last.ckpt-unfinished", "gpt--step=4-last.ckpt"
    )
    with pytest.raises(FileNotFoundError, match=r"resume_ignore_no_checkpoint=True"):
        find_resume_checkpoint(dirpath)
    assert find_resume_checkpoint(dirpath, resume_ignore_no_checkpoint=True) is None


def test_a_local_dirpath_is_refused() -> None:
    with pytest.raises(ValueError, match="resume discovery dirpath must be an s3://bucket/key URL"):
        find_resume_checkpoint("/checkpoints")


def test_discovery_sends_exactly_one_listing(s3_server: MotoServer, s3_client: Any, bucket: str) -> None:
    names = [f"gpt--step={step}-last.ckpt" for step in range(0, 500, 5)]
    dirpath = _put(s3_client, bucket, *names)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        store = small_store(proxy.url)
        with store:
            chosen = find_resume_checkpoint(dirpath, source=store)
        assert proxy.counts() == {"ListObjectsV2": 1}
    assert chosen == f"{dirpath}/gpt--step=495-last.ckpt"


def test_broadcast_without_a_process_group_returns_the_object() -> None:
    value = {"path": "s3://b/k.ckpt"}
    assert broadcast_object(value) is value


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),
        ({"RANK": "0"}, True),
        ({"RANK": "3"}, False),
        ({"SLURM_PROCID": "2"}, False),
        ({"OMPI_COMM_WORLD_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
        ({"GROUP_RANK": "0", "LOCAL_RANK": "0"}, True),
    ],
)
def test_global_rank_zero_is_read_from_the_launcher_environment(
    env: dict[str, str], zero: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_global_rank_zero() is zero


def _rank_results(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world)]


def test_broadcast_gives_every_rank_rank_zeros_object(tmp_path: Path) -> None:
    launch(
        broadcast_main,
        3,
        [str(tmp_path)],
        timeout_s=90,
        env={"PYTHONPATH": rank_pythonpath()},
    )
    results = _rank_results(tmp_path, 3)
    assert [r["value"] for r in results] == [{"from": 0, "path": "s3://b/rank0.ckpt"}] * 3
    assert [r["zero"] for r in results] == [True, False, False]


def test_with_a_process_group_rank_zeros_choice_reaches_every_rank(
    s3_server: MotoServer, s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    dirpath = _put(s3_client, bucket, "gpt--step=7-last.ckpt", "gpt--step=8-end.ckpt")
    with FaultProxy(s3_server.endpoint_url) as proxy:
        env = {"AWS_ENDPOINT_URL": proxy.url, "AWS_ENDPOINT_URL_S3": proxy.url}
        env["PYTHONPATH"] = rank_pythonpath()
        launch(check_resume_main, 2, [str(tmp_path), dirpath, "1"], timeout_s=90, env=env)
        assert proxy.count("ListObjectsV2") == 1
    for result in _rank_results(tmp_path, 2):
        # NeMo's own check_resume is then called without resume_if_exists, with the chosen path
        assert result["nemo_called_with"] == [
            ["False", "True", "False", dirpath, f"{dirpath}/gpt--step=8-end.ckpt"]
        ]


def test_with_a_process_group_rank_zeros_error_reaches_every_rank(
    s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    dirpath = _put(s3_client, bucket, "gpt--step=8-end.ckpt")
    env = {"PYTHONPATH": rank_pythonpath()}
    launch(check_resume_main, 2, [str(tmp_path), dirpath, "0"], timeout_s=90, env=env)
    for result in _rank_results(tmp_path, 2):
        assert "resume_past_end=True" in result["error"]


def test_committed_sharded_checkpoint_is_found_and_an_uncommitted_newer_one_ignored(
    s3_client: Any, bucket: str
) -> None:
    shard = "__0123456789abcdef0123456789abcdef_0_0badf00d.distcp"
    dirpath = _put(
        s3_client,
        bucket,
        "gpt--step=100-last.ckpt",
        f"gpt--step=200-last.ckpt/{shard}",
        "gpt--step=200-last.ckpt/.metadata",
        f"gpt--step=300-last.ckpt/{shard}",
    )
    assert find_resume_checkpoint(dirpath) == f"{dirpath}/gpt--step=200-last.ckpt"
