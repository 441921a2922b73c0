"""``s3ckpt verify``, ``cp`` and ``cleanup`` on sharded checkpoints, with s3-checkpoint-io's plugin
reading which shards the commit references."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_utils.cli import exit_codes
from support.cli import s3ckpt
from support.fault_proxy import FaultProxy
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")

STRAY = "__0123456789abcdef0123456789abcdef_1_0badf00d.distcp"


def _state(seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(64, 32, generator=generator),
        "b": torch.randn(32, generator=generator),
        "step": 7,
    }


def _save(url: str) -> dict[str, Any]:
    state = _state()  # flat: the local copy's file names are asserted (rank-hash: test_sharded_cli_layouts)
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5, key_prefix_strategy="flat"))
    return state


def _assert_loads(url: str, expected: dict[str, Any]) -> None:
    restored = {"w": torch.zeros(64, 32), "b": torch.zeros(32), "step": 0}
    dcp.load(restored, storage_reader=S3StorageReader(url))
    assert torch.equal(restored["w"], expected["w"])
    assert torch.equal(restored["b"], expected["b"])
    assert restored["step"] == expected["step"]


def _shard_keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    return [key for key in object_keys(s3_client, bucket, prefix) if key.endswith(".distcp")]


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_verify_checks_every_shard_and_that_the_commit_references_exist(s3_client: Any, bucket: str) -> None:
    url = f"s3://{bucket}/run/epoch=0-step=7.ckpt"
    _save(url)
    (shard,) = _shard_keys(s3_client, bucket, "run/")
    s3_client.put_object(Bucket=bucket, Key=f"run/epoch=0-step=7.ckpt/{STRAY}", Body=b"stray")

    good = s3ckpt("verify", url)
    assert good.code == exit_codes.OK, good.out + good.err
    assert "ok" in _line(good.out, "references").split()
    assert "s3-checkpoint-io, save " in _line(good.out, "layout")
    sizes = [line for line in good.out.splitlines() if line.startswith("size")]
    assert len(sizes) == 2, good.out  # the commit and the one referenced shard, not the stray
    assert [line.split()[1] for line in good.out.splitlines()[:-1]] == ["ok"] * 6, good.out
    assert "1 objects under" in good.err  # the stray is reported as unreferenced

    body = s3_client.get_object(Bucket=bucket, Key=shard)["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=shard, Body=body[:-100])
    short = s3ckpt("verify", url)
    assert short.code == exit_codes.CHECK_FAILED
    assert "shorter than referenced" in _line(short.out, "references")

    s3_client.delete_object(Bucket=bucket, Key=shard)
    missing = s3ckpt("verify", url + "/")
    assert missing.code == exit_codes.CHECK_FAILED
    assert shard.rsplit("/", 1)[1] in _line(missing.out, "references")


def test_verify_says_an_uncommitted_sharded_save_is_not_a_checkpoint(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key=f"run/last.ckpt/{STRAY}", Body=b"x")
    result = s3ckpt("verify", f"s3://{bucket}/run/last.ckpt/")
    assert result.code == exit_codes.CHECK_FAILED
    assert "never committed" in _line(result.out, "commit")


def test_cp_copies_a_whole_sharded_checkpoint_down_and_up_with_the_commit_last(
    s3_client: Any, bucket: str, fault_proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    src = f"s3://{bucket}/run/epoch=0-step=7.ckpt"
    state = _save(src)
    s3_client.put_object(Bucket=bucket, Key=f"run/epoch=0-step=7.ckpt/{STRAY}", Body=b"stray")

    down = s3ckpt("cp", src, f"{tmp_path}/")
    assert down.code == exit_codes.OK, down.err
    local = tmp_path / "epoch=0-step=7.ckpt"
    assert sorted(p.name for p in local.iterdir()) == sorted(
        [
            ".metadata",
            *(k.rsplit("/", 1)[1] for k in _shard_keys(s3_client, bucket, "run/") if STRAY not in k),
        ]
    )

    dst = f"s3://{bucket}/copy/epoch=0-step=7.ckpt"
    up = s3ckpt("--endpoint-url", fault_proxy.url, "cp", str(local), dst)
    assert up.code == exit_codes.OK, up.err
    writes = [r.path for r in fault_proxy.requests if r.method in ("PUT", "POST") and "copy/" in r.path]
    assert writes[-1].endswith("/.metadata"), writes  # the commit is the last write
    _assert_loads(dst, state)


def test_cleanup_removes_only_old_shards_that_no_commit_references(s3_client: Any, bucket: str) -> None:
    url = f"s3://{bucket}/run/epoch=0-step=7.ckpt"
    state = _save(url)
    (kept,) = _shard_keys(s3_client, bucket, "run/")
    s3_client.put_object(Bucket=bucket, Key=f"run/epoch=0-step=7.ckpt/{STRAY}", Body=b"stray")
    s3_client.put_object(Bucket=bucket, Key=f"run/epoch=0-step=9.ckpt/{STRAY}", Body=b"never committed")

    young = s3ckpt("cleanup", f"s3://{bucket}/run/", "--older-than", "1d")
    assert young.code == exit_codes.OK
    assert "removed 0 unreferenced shard objects" in young.out
    time.sleep(1.2)
    old = s3ckpt("cleanup", f"s3://{bucket}/run/", "--older-than", "1s")
    assert old.code == exit_codes.OK, old.err
    assert "removed 2 unreferenced shard objects" in old.out

    assert object_keys(s3_client, bucket, "run/") == sorted([kept, "run/epoch=0-step=7.ckpt/.metadata"])
    _assert_loads(url, state)


class _RunsCode:
    """Unpickling this would call ``pathlib.Path.touch`` on ``path``."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def test_verify_reads_a_commit_without_running_pickled_code(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    import pickle

    marker = tmp_path / "ran"
    s3_client.put_object(Bucket=bucket, Key=f"run/x.ckpt/{STRAY}", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="run/x.ckpt/.metadata", Body=pickle.dumps(_RunsCode(marker)))

    result = s3ckpt("verify", f"s3://{bucket}/run/x.ckpt")

    assert result.code == exit_codes.CHECK_FAILED
    assert "has no place in a sharded checkpoint's commit" in _line(result.out, "references")
    assert not marker.exists()
