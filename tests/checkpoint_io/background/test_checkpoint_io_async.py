"""Asynchronous saves: ordering against removals, backpressure, and long runs (bounded, no leaks)."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any
from urllib.parse import unquote

import psutil
import pytest
import torch

from checkpoint_io.lit_helpers import TinyModel, data, trainer
from checkpoint_io.s3_helpers import Gate, keys, state
from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint
from support.fault_proxy import FaultProxy

WRITES = ("PutObject", "UploadPart", "CompleteMultipartUpload")


def exists(s3_client: Any, bucket: str, key: str) -> bool:
    return key in keys(s3_client, bucket)


def test_removal_waits_until_the_new_checkpoint_is_in_s3_during_a_slow_upload(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        io = S3CheckpointIO(
            f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, endpoint_url=proxy.url
        )
        try:
            old, new = f"s3://{bucket}/run/old.ckpt", f"s3://{bucket}/run/new.ckpt"
            io.save_checkpoint(state(1), old)
            io.wait_for_saves(timeout=60)
            for operation in WRITES:
                proxy.add_fault(operation, "delay", delay_s=1.5)
            io.save_checkpoint(state(2), new)
            io.remove_checkpoint(old)  # what ModelCheckpoint does right after saving the new best
            # both calls returned while the upload is still held up in the proxy
            assert not exists(s3_client, bucket, "run/new.ckpt")
            assert exists(s3_client, bucket, "run/old.ckpt")
            io.wait_for_saves(timeout=60)
            assert keys(s3_client, bucket) == {"run/new.ckpt"}
            operations = [(r.operation, r.path) for r in proxy.requests if r.status]
            written = max(
                i for i, (op, path) in enumerate(operations) if op in WRITES and path.endswith("new.ckpt")
            )
            deleted = next(i for i, (op, path) in enumerate(operations) if op == "DeleteObject")
            assert deleted > written
        finally:
            io.teardown()


def test_trainer_top_k_never_deletes_before_the_replacement_exists(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: Any
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        for operation in WRITES:
            proxy.add_fault(operation, "delay", delay_s=0.3)
        io = S3CheckpointIO(
            f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, endpoint_url=proxy.url
        )
        callback = S3ModelCheckpoint(
            f"s3://{bucket}/run",
            filename="{step}",
            monitor="score",
            mode="max",
            save_top_k=1,
            every_n_train_steps=1,
        )
        trainer(plugins=[io], callbacks=[callback], max_steps=5, root=str(tmp_path)).fit(TinyModel(), data())
        records = [r for r in proxy.requests if r.status]
    assert keys(s3_client, bucket) == {"run/step=5.ckpt"}
    deletions = [i for i, r in enumerate(records) if r.operation == "DeleteObject"]
    assert len(deletions) == 4
    for index in deletions:
        deleted_step = int(unquote(records[index].path).rsplit("step=", 1)[1].split(".")[0])
        # the checkpoint that replaced it (the next step) was completely written before the delete
        replacement = f"step={deleted_step + 1}.ckpt"
        assert any(
            r.operation in ("PutObject", "CompleteMultipartUpload") and unquote(r.path).endswith(replacement)
            for r in records[:index]
        ), f"step={deleted_step}.ckpt was deleted before {replacement} existed"


def test_a_new_save_waits_for_the_pending_one_when_the_limit_is_reached(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, max_pending_saves=1)
    gate = Gate()
    try:
        io.save_checkpoint({"gate": gate, "step": 1}, f"s3://{bucket}/run/a.ckpt")
        second = threading.Thread(target=io.save_checkpoint, args=(state(2), f"s3://{bucket}/run/b.ckpt"))
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive(), "the second save should wait while the first is still uploading"
        gate.open()
        second.join(timeout=30)
        assert not second.is_alive()
        io.wait_for_saves(timeout=60)
        assert [s.path.rsplit("/", 1)[-1] for s in io.save_history] == ["a.ckpt", "b.ckpt"]
        assert io.save_history[1].stall_s >= 0.5
    finally:
        gate.open()
        io.teardown()


def test_more_pending_saves_allowed_means_no_wait(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, max_pending_saves=2)
    gate = Gate()
    try:
        io.save_checkpoint({"gate": gate, "step": 1}, f"s3://{bucket}/run/a.ckpt")
        second = threading.Thread(target=io.save_checkpoint, args=(state(2), f"s3://{bucket}/run/b.ckpt"))
        second.start()
        second.join(timeout=30)
        assert not second.is_alive()
        assert sorted(io.pending_saves) == [f"s3://{bucket}/run/a.ckpt", f"s3://{bucket}/run/b.ckpt"]
        gate.open()
        io.wait_for_saves(timeout=60)
        assert io.pending_saves == []
    finally:
        gate.open()
        io.teardown()


def test_load_waits_for_a_pending_save_of_the_same_path(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    gate = Gate()
    url = f"s3://{bucket}/run/a.ckpt"
    try:
        io.save_checkpoint({"gate": gate, "step": 7}, url)
        threading.Timer(0.2, gate.open).start()
        assert io.load_checkpoint(url, weights_only=False)["step"] == 7
    finally:
        gate.open()
        io.teardown()


@pytest.mark.slow
def test_hundred_async_saves_keep_memory_flat_leak_no_threads_and_all_complete(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    gc.collect()
    threads_before = {t.ident for t in threading.enumerate()}
    process = psutil.Process()
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    live = {"w": torch.randn(512 * 1024), "step": 0}  # 2 MiB of tensor per snapshot
    deadline = time.monotonic() + 180
    rss_after_warmup = 0
    for step in range(100):
        live["w"].add_(1.0)
        live["step"] = step
        io.save_checkpoint(live, f"s3://{bucket}/run/step={step:03d}.ckpt")
        if step == 19:
            io.wait_for_saves(timeout=60)
            gc.collect()
            rss_after_warmup = process.memory_info().rss
        assert time.monotonic() < deadline
    io.wait_for_saves(timeout=120)
    gc.collect()
    growth_mib = (process.memory_info().rss - rss_after_warmup) / 2**20
    io.teardown()
    # 80 leaked 2 MiB snapshots would be 160 MiB; allow allocator noise well below that
    assert growth_mib < 40, f"RSS grew {growth_mib:.1f} MiB over 80 saves"
    time.sleep(0.1)
    leaked = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert leaked == []
    listing = {item["Key"]: item["Size"] for item in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert len(listing) == 100
    assert [s.sequence for s in io.save_history] == list(range(1, 101))
    for stats in io.save_history:
        assert listing[stats.path.split("/", 3)[3]] == stats.bytes
    last = S3CheckpointIO(f"s3://{bucket}/run").load_checkpoint(f"s3://{bucket}/run/step=099.ckpt")
    assert torch.equal(last["w"], live["w"])
    assert last["step"] == 99
