"""SnapshotWriter: the second half of an asynchronous save (serialize, parts, S3), on its own."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
import torch

from checkpoint_io.s3_helpers import keys
from s3_checkpoint_io.background.snapshot import take_snapshot
from s3_checkpoint_io.background.snapshot_writer import SnapshotWriter
from s3_checkpoint_io.background.upload_process import (
    NeedsThisInterpreter,
    UploadProcess,
    upload_process_supported,
)
from s3_utils import S3ClientConfig, TransferConfig

needs_upload_process = pytest.mark.skipif(not upload_process_supported(), reason="no shared slabs here")


def _class_of_the_training_script(monkeypatch: pytest.MonkeyPatch) -> type:
    # A class as a training script defines it: found in __main__ by this interpreter, nowhere else.
    cls = type("ScriptConfig", (), {"__module__": "__main__", "__qualname__": "ScriptConfig"})
    monkeypatch.setattr(sys.modules["__main__"], "ScriptConfig", cls, raising=False)
    return cls


@needs_upload_process
def test_the_upload_process_refuses_a_script_object_before_starting_or_sending(
    s3_server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SnapshotWriter(S3ClientConfig.from_env(), TransferConfig(chunk_size_MB=5), True)
    process = UploadProcess(S3ClientConfig.from_env(), TransferConfig(chunk_size_MB=5))
    snapshot = take_snapshot({"config": _class_of_the_training_script(monkeypatch)()}, writer.buffers)
    try:
        with pytest.raises(NeedsThisInterpreter, match="ScriptConfig"):
            process.upload(snapshot.state, f"s3://{bucket}/a.ckpt", writer.buffers)
        assert process.pid is None  # nothing was started for it
    finally:
        writer.buffers.give_back(snapshot.borrowed)
        process.close()
        writer.close()


@pytest.mark.parametrize("use_upload_process", [True, False])
def test_a_script_object_is_written_here_and_the_buffers_go_back(
    s3_server: Any, bucket: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch, use_upload_process: bool
) -> None:
    writer = SnapshotWriter(S3ClientConfig.from_env(), TransferConfig(chunk_size_MB=5), use_upload_process)
    cls = _class_of_the_training_script(monkeypatch)
    live = {"w": torch.arange(1000, dtype=torch.float32), "config": cls()}
    url = f"s3://{bucket}/a.ckpt"
    try:
        snapshot = take_snapshot(live, writer.buffers)
        stats = writer.write(snapshot, url)
        assert snapshot.state is None  # dropped, and its buffers handed back to the pool
        assert snapshot.borrowed == []
        assert writer.upload_process_pid is None  # the helper was never needed
        body = s3_client.get_object(Bucket=bucket, Key="a.ckpt")["Body"].read()
        assert stats.bytes == len(body)
        loaded = torch.load(io.BytesIO(body), weights_only=False)
        assert torch.equal(loaded["w"], live["w"])
        assert type(loaded["config"]) is cls
    finally:
        writer.close()
    assert keys(s3_client, bucket) == {"a.ckpt"}
