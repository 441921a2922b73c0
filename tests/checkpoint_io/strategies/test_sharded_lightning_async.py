"""Asynchronous sharded saves through S3ModelParallelStrategy (FSDP2, 2 gloo CPU ranks, real Trainer.fit)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from checkpoint_io.strategies.sharded_lightning_targets import fit_async
from s3_checkpoint_io.dcp import S3StorageReader
from s3_utils.sharded import COMMIT_NAME
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]


def _outcomes(out: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"outcome-rank{rank}.json").read_text()) for rank in (0, 1)]


def _prefixes(s3_client: Any, bucket: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for key in object_keys(s3_client, bucket, "run/"):
        prefix, _, name = key[len("run/") :].partition("/")
        found.setdefault(prefix, set()).add(name)
    return found


def test_async_sharded_fit_returns_before_commits_removes_after_them_and_the_last_loads(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    fault_proxy.add_fault("PutObject", "delay", delay_s=0.5, path_contains="/.metadata")
    launch(
        fit_async, world_size=2, args=[f"s3://{bucket}/run", str(tmp_path), fault_proxy.url, "6", "2", "1"]
    )

    outcomes = _outcomes(tmp_path)
    assert [o["error"] for o in outcomes] == [None, None]
    assert [o["loaded_step"] for o in outcomes] == [6, 6]  # loading a save in flight waited for it
    assert outcomes[0]["committed_on_return"] == [False, False, False]  # each save returned first
    assert set(_prefixes(s3_client, bucket)) == {"epoch=0-step=6.ckpt"}  # top-1: older ones removed
    for older, newer in ((2, 4), (4, 6)):  # the older checkpoint's deletion starts after the newer commit
        committed = fault_proxy.first_success("PutObject", f"step={newer}.ckpt/{COMMIT_NAME}")
        deleted = fault_proxy.first_success("DeleteObject", f"step={older}.ckpt/{COMMIT_NAME}")
        assert committed < deleted

    finals = [torch.load(tmp_path / f"final-rank{rank}.pt") for rank in (0, 1)]
    names = [name for name in finals[0] if "." not in name.removeprefix("net.").split(".", 1)[1]]
    state = {"state_dict": {n: torch.zeros_like(torch.cat([f[n] for f in finals])) for n in names}}
    dcp.load(state, storage_reader=S3StorageReader(f"s3://{bucket}/run/epoch=0-step=6.ckpt"))
    for name in names:
        assert torch.equal(state["state_dict"][name], torch.cat([f[name] for f in finals])), name


@pytest.mark.parametrize(
    ("max_steps", "load_at_end", "raised_at"),
    [
        ("8", "0", "the next save"),
        ("4", "1", "the load"),
        pytest.param(
            "4",
            "0",
            "teardown",
            # Known bug, open: a rank sometimes aborts at interpreter exit after the test's checks
            # ("terminate called without an active exception", SIGABRT): the async saves' own gloo group
            # or DCP's executor thread outlives teardown. Seen once in four CI runs, on Lightning 2.4;
            # not reproduced in 24 runs of this case alone (with and without a busy core), before or
            # after teardown began destroying the saves' group; kept until CI shows it gone.
            marks=pytest.mark.xfail(strict=False, reason="rank may abort at exit: async group not torn down"),
        ),
    ],
)
def test_async_sharded_save_failure_is_raised_later_on_every_rank_and_keeps_the_previous_checkpoint(
    bucket: str,
    s3_client: Any,
    fault_proxy: FaultProxy,
    tmp_path: pathlib.Path,
    max_steps: str,
    load_at_end: str,
    raised_at: str,
) -> None:
    fault_proxy.add_fault("PutObject", "access_denied", path_contains=f"step=4.ckpt/{COMMIT_NAME}")
    launch(
        fit_async,
        world_size=2,
        args=[f"s3://{bucket}/run", str(tmp_path), fault_proxy.url, max_steps, "2", load_at_end],
    )

    for outcome in _outcomes(tmp_path):  # every rank raises at the same call, none hangs
        assert outcome["error"] is not None, raised_at
        assert outcome["error"].startswith("BackgroundSaveError"), outcome["error"]
        assert "step=4.ckpt" in outcome["error"]
    saved = _prefixes(s3_client, bucket)
    assert COMMIT_NAME in saved["epoch=0-step=2.ckpt"]  # its removal was skipped
    assert COMMIT_NAME not in saved.get("epoch=0-step=4.ckpt", set())
    assert "epoch=0-step=6.ckpt" not in saved  # no save was started after the failure
