"""``s3ckpt`` with s3-checkpoint-io installed: ``verify`` also loads the checkpoint with torch, and
``bench --torch`` times a real S3CheckpointIO save and load."""

from __future__ import annotations

import io
from typing import Any

import torch

from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.cli_plugin import TorchCheckpointPlugin
from s3_utils.cli import exit_codes
from s3_utils.cli.plugins import load_plugins
from support.cli import s3ckpt
from support.s3_objects import object_keys


class Unlisted:
    """A class torch's weights_only loader does not allow."""

    def __init__(self) -> None:
        self.value = 3


def line(output: str, name: str) -> str:
    return next(text for text in output.splitlines() if text.startswith(name))


def checkpoint_bytes(checkpoint: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def test_the_plugin_is_found_through_its_entry_point() -> None:
    assert any(isinstance(p, TorchCheckpointPlugin) for p in load_plugins())


def test_verify_loads_a_checkpoint_saved_by_s3_checkpoint_io(bucket: str) -> None:
    url = f"s3://{bucket}/run/model--step=42-last.ckpt"
    checkpoint_io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    state = {"state_dict": {"w": torch.ones(3, 4), "b": torch.zeros(4)}, "global_step": 42, "epoch": 1}
    checkpoint_io.save_checkpoint(state, url)
    checkpoint_io.teardown()

    code, out, _ = s3ckpt("verify", url)

    assert code == exit_codes.OK, out
    loads = line(out, "loads")
    assert "ok" in loads
    assert "Lightning checkpoint: 2 tensors (16 values), global_step=42, epoch=1" in loads


def test_verify_reports_a_truncated_checkpoint_that_does_not_load(s3_client: Any, bucket: str) -> None:
    whole = checkpoint_bytes({"state_dict": {"w": torch.rand(50_000)}})
    s3_client.put_object(Bucket=bucket, Key="half.ckpt", Body=whole[: len(whole) // 2])

    code, out, _ = s3ckpt("verify", f"s3://{bucket}/half.ckpt")

    assert code == exit_codes.CHECK_FAILED
    assert "ok" in line(out, "size")  # S3 holds exactly what was uploaded: only loading shows the damage
    assert "FAILED" in line(out, "loads")
    assert "CorruptCheckpointError" in line(out, "loads")
    assert out.splitlines()[-1] == f"BAD: s3://{bucket}/half.ckpt"


def test_verify_refuses_pickled_objects_unless_trusted(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="obj.ckpt", Body=checkpoint_bytes({"extra": Unlisted()}))
    url = f"s3://{bucket}/obj.ckpt"

    code, out, _ = s3ckpt("verify", url)
    assert code == exit_codes.CHECK_FAILED
    assert "--trust" in line(out, "loads")

    code, out, _ = s3ckpt("verify", "--trust", url)
    assert code == exit_codes.OK, out
    assert "ok" in line(out, "loads")


def test_bench_torch_times_a_real_save_and_load(s3_client: Any, bucket: str) -> None:
    code, out, err = s3ckpt(
        "bench",
        f"s3://{bucket}/scratch",
        "--size-mb",
        "6",
        "--chunk-sizes",
        "5",
        "--concurrency",
        "2",
        "--torch",
    )

    assert code == exit_codes.OK, err
    timing = line(out, "torch state_dict via S3CheckpointIO")
    assert "MiB saved in" in timing
    assert "loaded in" in timing
    assert object_keys(s3_client, bucket) == []
