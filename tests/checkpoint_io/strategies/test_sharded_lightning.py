"""Lightning fit -> SIGKILL -> resume from s3:// with S3ModelParallelStrategy (FSDP2, 2 gloo CPU ranks)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import torch

from checkpoint_io.strategies.sharded_lightning_targets import fit
from s3_utils.sharded import COMMIT_NAME
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STRAY = "__0123456789abcdef0123456789abcdef_0_0badf00d.distcp"


def _checkpoints(s3_client: Any, bucket: str) -> dict[str, set[str]]:
    """Each checkpoint prefix under run/ and the names of its objects."""
    found: dict[str, set[str]] = {}
    for key in object_keys(s3_client, bucket, "run/"):
        prefix, _, name = key[len("run/") :].partition("/")
        found.setdefault(prefix, set()).add(name)
    return found


def test_sharded_fit_killed_resumes_from_s3_last_and_top_k_removes_whole_checkpoints(
    bucket: str, s3_client: Any, tmp_path: pathlib.Path
) -> None:
    dirpath = f"s3://{bucket}/run"
    killed = launch(fit, world_size=2, args=[dirpath, str(tmp_path), "12", "3"], timeout_s=150, check=False)
    assert killed[0].returncode < 0, killed[0].output[-3000:]  # SIGKILLed at the start of step 3

    saved = _checkpoints(s3_client, bucket)
    # Steps 1 and 2 were replaced (top-1 and one last per step): every object of theirs is gone.
    assert set(saved) == {"epoch=0-step=3.ckpt", "epoch=0-step=3-last.ckpt"}, saved
    for names in saved.values():
        assert COMMIT_NAME in names, names
        assert len([n for n in names if n.endswith(".distcp")]) == 2, names
    # A newer save that never committed: ckpt_path="last" must not pick it.
    s3_client.put_object(Bucket=bucket, Key=f"run/epoch=0-step=9-last.ckpt/{STRAY}", Body=b"x" * 64)

    launch(fit, world_size=2, args=[dirpath, str(tmp_path), "5", "0"], timeout_s=150)

    for rank in (0, 1):
        info = (tmp_path / f"resumed-rank{rank}.json").read_text()
        assert '"global_step": 3' in info, info
        assert f"{dirpath}/epoch=0-step=3-last.ckpt" in info, info
        before = torch.load(tmp_path / f"killed-rank{rank}.pt")
        after = torch.load(tmp_path / f"resumed-rank{rank}.pt")
        assert before.keys() == after.keys()
        assert len(before) == 12
        for name, value in before.items():
            assert torch.equal(value, after[name]), (rank, name)
    final = _checkpoints(s3_client, bucket)
    # The resumed-from last checkpoint stays; top-k and later lasts were replaced as whole prefixes.
    assert set(final) == {
        "epoch=0-step=3-last.ckpt",
        "epoch=0-step=5.ckpt",
        "epoch=0-step=5-last.ckpt",
        "epoch=0-step=9-last.ckpt",
    }, final
    assert not any("meta.pt" in names for names in final.values())
