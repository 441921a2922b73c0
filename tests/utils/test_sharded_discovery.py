"""Resume discovery and ``s3ckpt ls`` count a committed sharded checkpoint as one, an uncommitted one not."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from s3_utils.checkpoint_names import NamedCheckpoint, choose_resume_checkpoint
from s3_utils.cli import exit_codes
from s3_utils.sharded import COMMIT_NAME, checkpoint_of_commit
from support.cli import s3ckpt
from support.s3_objects import object_keys

SHARD = "__0123456789abcdef0123456789abcdef_0_0badf00d.distcp"


def _put_sharded(client: Any, bucket: str, prefix: str, committed: bool) -> None:
    for rank in (0, 1):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{SHARD.replace('_0_', f'_{rank}_')}", Body=b"s" * 64)
    if committed:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{COMMIT_NAME}", Body=b"commit")


def test_a_committed_sharded_checkpoint_is_one_resume_candidate_dated_by_its_commit() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    listing = [
        NamedCheckpoint("s3://b/run/step=5-last.ckpt", base),
        NamedCheckpoint(f"s3://b/run/step=7-last.ckpt/{SHARD}", base + timedelta(1)),
        NamedCheckpoint(f"s3://b/run/step=7-last.ckpt/{COMMIT_NAME}", base + timedelta(2)),
        NamedCheckpoint(f"s3://b/run/step=9-last.ckpt/{SHARD}", base + timedelta(3)),  # never committed
    ]
    choice = choose_resume_checkpoint(listing)
    assert choice is not None
    assert choice.checkpoint == NamedCheckpoint("s3://b/run/step=7-last.ckpt", base + timedelta(2))
    assert choice.reason == "highest step"


def test_only_a_commit_object_names_a_sharded_checkpoint() -> None:
    assert checkpoint_of_commit("s3://b/run/x.ckpt/.metadata") == "s3://b/run/x.ckpt"
    assert checkpoint_of_commit("run/x.ckpt/.metadata") == "run/x.ckpt"
    assert checkpoint_of_commit("s3://b/run/x.ckpt/.metadata.tmp") is None
    assert checkpoint_of_commit(".metadata") is None
    assert checkpoint_of_commit("s3://b/run//.metadata") is None


def test_ls_picks_the_committed_sharded_checkpoint_and_flags_the_uncommitted_one(
    s3_client: Any, bucket: str
) -> None:
    s3_client.put_object(Bucket=bucket, Key="run/epoch=0-step=3-last.ckpt", Body=b"x")
    _put_sharded(s3_client, bucket, "run/epoch=0-step=6-last.ckpt", committed=True)
    _put_sharded(s3_client, bucket, "run/epoch=0-step=9-last.ckpt", committed=False)

    result = s3ckpt("ls", f"s3://{bucket}/run")
    assert result.code == exit_codes.OK, result.err
    rows = result.out.splitlines()
    marked = [row for row in rows if row.startswith("* ")]
    assert len(marked) == 1
    assert "epoch=0-step=6-last.ckpt/  (3 objects; sharded checkpoint, committed)" in marked[0]
    uncommitted = next(row for row in rows if "step=9" in row)
    assert "sharded save without a commit: unfinished, never resumed from" in uncommitted
    assert f"resume: s3://{bucket}/run/epoch=0-step=6-last.ckpt" in rows

    data = json.loads(s3ckpt("ls", "--json", f"s3://{bucket}/run").out)
    assert data["resume"] == f"s3://{bucket}/run/epoch=0-step=6-last.ckpt"
    assert [c["committed"] for c in data["checkpoints"]] == [False, True, False]


def test_ls_resumes_from_nothing_when_the_only_sharded_save_never_committed(
    s3_client: Any, bucket: str
) -> None:
    _put_sharded(s3_client, bucket, "run/last.ckpt", committed=False)
    result = s3ckpt("ls", f"s3://{bucket}/run")
    assert result.code == exit_codes.OK, result.err
    assert not [row for row in result.out.splitlines() if row.startswith("* ")]
    assert "resume: none" in result.out


def test_without_torch_cleanup_removes_uncommitted_shards_and_leaves_committed_checkpoints(
    s3_client: Any, bucket: str
) -> None:
    _put_sharded(s3_client, bucket, "run/epoch=0-step=6.ckpt", committed=True)
    _put_sharded(s3_client, bucket, "run/epoch=0-step=9.ckpt", committed=False)
    time.sleep(1.2)

    result = s3ckpt("cleanup", f"s3://{bucket}/run/", "--older-than", "1s")

    assert result.code == exit_codes.OK, result.err
    assert "removed 2 unreferenced shard objects" in result.out
    assert f"left s3://{bucket}/run/epoch=0-step=6.ckpt/ alone" in result.err
    assert object_keys(s3_client, bucket, "run/epoch=0-step=9.ckpt/") == []
    assert len(object_keys(s3_client, bucket, "run/epoch=0-step=6.ckpt/")) == 3


def test_without_torch_verify_checks_every_object_of_a_committed_sharded_checkpoint(
    s3_client: Any, bucket: str
) -> None:
    _put_sharded(s3_client, bucket, "run/epoch=0-step=6.ckpt", committed=True)
    result = s3ckpt("verify", f"s3://{bucket}/run/epoch=0-step=6.ckpt")
    assert result.code == exit_codes.OK, result.out
    assert len([line for line in result.out.splitlines() if line.startswith("size")]) == 3
    assert "skipped" in next(line for line in result.out.splitlines() if line.startswith("references"))
