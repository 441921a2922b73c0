"""S3CheckpointIO on its own against a real S3 server: construction, save/load, errors, removal."""

from __future__ import annotations

import functools
import pathlib
import threading
from typing import Any

import pytest
import torch
from lightning.fabric.plugins import CheckpointIO

from checkpoint_io.lit_helpers import assert_same
from checkpoint_io.s3_helpers import Gate, keys, state, wait_until_idle
from s3_checkpoint_io import (
    BackgroundSaveError,
    CorruptCheckpointError,
    S3CheckpointIO,
    WeightsOnlyLoadError,
)


@pytest.fixture
def io(s3_server: Any, bucket: str) -> Any:
    plugin = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    yield plugin
    plugin.teardown()


def test_is_a_lightning_checkpoint_io(io: S3CheckpointIO) -> None:
    assert isinstance(io, CheckpointIO)


@pytest.mark.parametrize("dirpath", ["/tmp/checkpoints", "checkpoints", "gs://bucket/x"])
def test_local_dirpath_is_refused_pointing_at_torch_checkpoint_io(dirpath: str) -> None:
    with pytest.raises(ValueError, match="TorchCheckpointIO"):
        S3CheckpointIO(dirpath)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("chunk_size_MB", 4, "chunk_size_MB=4 is out of range"),
        ("max_read_concurrency", 0, "max_read_concurrency=0"),
        ("max_write_concurrency", 0, "max_write_concurrency=0"),
        ("max_pending_saves", 0, "max_pending_saves=0"),
    ],
)
def test_bad_settings_fail_at_construction(option: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3CheckpointIO("s3://bucket-name/run", **{option: value})


def test_bad_bucket_name_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="bucket name"):
        S3CheckpointIO("s3://Bad_Bucket/run")


def test_client_config_and_endpoint_together_are_refused() -> None:
    from s3_utils import S3ClientConfig

    with pytest.raises(ValueError, match="not both"):
        S3CheckpointIO("s3://bucket-name/run", endpoint_url="http://x:1", client_config=S3ClientConfig())


def test_repr_never_shows_the_secret(s3_server: Any) -> None:
    from s3_utils import S3ClientConfig

    config = S3ClientConfig(access_key_id="AKIAEXAMPLE", secret_access_key="very-secret-value")
    plugin = S3CheckpointIO("s3://bucket-name/run", client_config=config)
    assert "very-secret-value" not in repr(plugin)
    assert "very-secret-value" not in repr(plugin.client_config)


def test_storage_options_raise_type_error(io: S3CheckpointIO, bucket: str) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint(state(), f"s3://{bucket}/run/a.ckpt", storage_options={"x": 1})


def test_save_then_load_round_trips_exactly_and_keeps_shared_storage(io: S3CheckpointIO, bucket: str) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    original = state(3)
    io.save_checkpoint(original, url)
    loaded = io.load_checkpoint(url)
    assert_same(original, loaded)
    shared = loaded["state_dict"]
    assert shared["w"].untyped_storage().data_ptr() == shared["w_t"].untyped_storage().data_ptr()
    stats = io.last_save_stats
    assert stats is not None
    assert stats.path == url
    assert stats.bytes > 64 * 32 * 4
    assert stats.asynchronous is False
    assert stats.upload_s > 0


def test_multipart_save_of_a_checkpoint_larger_than_one_chunk(
    io: S3CheckpointIO, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/run/big.ckpt"
    big = {"w": torch.randn(3 * 1024 * 1024)}  # 12 MiB: three 5 MiB parts
    io.save_checkpoint(big, url)
    head = s3_client.head_object(Bucket=bucket, Key="run/big.ckpt")
    assert head["ContentLength"] == io.last_save_stats.bytes  # type: ignore[union-attr]
    assert torch.equal(io.load_checkpoint(url)["w"], big["w"])


def test_pathlib_collapsed_url_is_accepted(io: S3CheckpointIO, bucket: str) -> None:
    path = pathlib.Path(f"s3://{bucket}/run/p.ckpt")  # becomes s3:/bucket/...
    io.save_checkpoint(state(), path)
    assert io.load_checkpoint(path)["global_step"] == 0


def test_map_location_is_honoured(io: S3CheckpointIO, bucket: str) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    io.save_checkpoint(state(), url)
    seen: list[str] = []

    def to_cpu(storage: Any, location: str) -> Any:
        seen.append(location)
        return storage

    io.load_checkpoint(url, map_location=to_cpu)
    assert seen
    assert all(location == "cpu" for location in seen)


def test_missing_checkpoint_is_file_not_found_naming_the_url(io: S3CheckpointIO, bucket: str) -> None:
    url = f"s3://{bucket}/run/nope.ckpt"
    with pytest.raises(FileNotFoundError, match=url):
        io.load_checkpoint(url)


def test_non_torch_object_says_it_is_not_a_checkpoint(
    io: S3CheckpointIO, bucket: str, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=bucket, Key="run/notes.ckpt", Body=b"just some text, not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match=r"not a torch\.save checkpoint"):
        io.load_checkpoint(f"s3://{bucket}/run/notes.ckpt")


def test_truncated_checkpoint_says_corrupt(io: S3CheckpointIO, bucket: str, s3_client: Any) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    io.save_checkpoint(state(), url)
    whole = s3_client.get_object(Bucket=bucket, Key="run/a.ckpt")["Body"].read()
    s3_client.put_object(Bucket=bucket, Key="run/cut.ckpt", Body=whole[: len(whole) // 2])
    with pytest.raises(CorruptCheckpointError, match="corrupt or truncated"):
        io.load_checkpoint(f"s3://{bucket}/run/cut.ckpt")


class Custom:
    def __init__(self) -> None:
        self.value = 42


def test_weights_only_refusal_says_what_to_do(io: S3CheckpointIO, bucket: str) -> None:
    url = f"s3://{bucket}/run/custom.ckpt"
    io.save_checkpoint({"state_dict": {}, "extra": Custom()}, url)
    with pytest.raises(WeightsOnlyLoadError, match="weights_only=False"):
        io.load_checkpoint(url, weights_only=True)
    assert io.load_checkpoint(url, weights_only=False)["extra"].value == 42


def test_exception_inside_torch_save_publishes_nothing_and_keeps_previous(
    io: S3CheckpointIO, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    io.save_checkpoint(state(1), url)
    # Big tensors first, so parts are already uploading when pickling reaches the lock.
    bad = {"big": torch.randn(3 * 1024 * 1024), "lock": threading.Lock()}
    with pytest.raises(TypeError, match="lock"):
        io.save_checkpoint(bad, url)
    with pytest.raises(TypeError):
        io.save_checkpoint(bad, f"s3://{bucket}/run/new.ckpt")
    assert keys(s3_client, bucket) == {"run/a.ckpt"}
    assert io.load_checkpoint(url)["global_step"] == 1
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_remove_checkpoint_deletes_the_object(io: S3CheckpointIO, bucket: str, s3_client: Any) -> None:
    url = f"s3://{bucket}/run/a.ckpt"
    io.save_checkpoint(state(), url)
    io.remove_checkpoint(url)
    assert keys(s3_client, bucket) == set()
    io.remove_checkpoint(url)  # removing what is gone is not an error, as for a local file


def test_async_save_returns_a_snapshot_unaffected_by_later_mutation(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    try:
        live = state(5)
        expected = {"w": live["state_dict"]["w"].clone()}
        url = f"s3://{bucket}/run/a.ckpt"
        io.save_checkpoint(live, url)
        live["state_dict"]["w"].add_(100.0)  # the optimizer keeps going
        live["global_step"] = 999
        io.wait_for_saves(timeout=60)
        loaded = io.load_checkpoint(url)
        assert torch.equal(loaded["state_dict"]["w"], expected["w"])
        assert loaded["global_step"] == 5
        stats = io.last_save_stats
        assert stats is not None
        assert stats.asynchronous
        assert stats.path == url
    finally:
        io.teardown()


def test_async_unpicklable_object_fails_at_snapshot_and_publishes_nothing(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    try:
        with pytest.raises(TypeError, match=r"\['lock'\]"):
            io.save_checkpoint({"lock": threading.Lock()}, f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves(timeout=60)
        assert keys(s3_client, bucket) == set()
    finally:
        io.teardown()


def test_async_pickling_failure_surfaces_at_next_save_and_nothing_is_published(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    good = f"s3://{bucket}/run/good.ckpt"
    bad = f"s3://{bucket}/run/bad.ckpt"
    try:
        io.save_checkpoint(state(1), good)
        # A local function deep-copies as itself, so the snapshot succeeds and torch.save fails later.
        io.save_checkpoint({"big": torch.randn(2 * 1024 * 1024), "fn": functools.partial(lambda: 1)}, bad)
        wait_until_idle(io)
        with pytest.raises(BackgroundSaveError, match=r"bad\.ckpt") as caught:
            io.save_checkpoint(state(3), f"s3://{bucket}/run/next.ckpt")
        assert caught.value.path == bad
        io.wait_for_saves(timeout=60)
        assert keys(s3_client, bucket) == {"run/good.ckpt"}
    finally:
        io.teardown()


def test_async_failure_surfaces_at_teardown(s3_server: Any, bucket: str) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    io.save_checkpoint({"fn": functools.partial(lambda: 1)}, f"s3://{bucket}/run/bad.ckpt")
    with pytest.raises(BackgroundSaveError, match=r"bad\.ckpt"):
        io.teardown()
    io.teardown()  # reported once; the object is clean again


def test_async_failure_surfaces_at_remove_checkpoint_and_the_old_one_stays(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True)
    old = f"s3://{bucket}/run/old.ckpt"
    try:
        io.save_checkpoint(state(1), old)
        io.save_checkpoint({"fn": functools.partial(lambda: 1)}, f"s3://{bucket}/run/new.ckpt")
        wait_until_idle(io)
        with pytest.raises(BackgroundSaveError, match=r"new\.ckpt"):
            io.remove_checkpoint(old)
        assert keys(s3_client, bucket) == {"run/old.ckpt"}
    finally:
        io.teardown()


def test_removal_queued_behind_a_failing_save_is_skipped(s3_server: Any, bucket: str, s3_client: Any) -> None:
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, async_checkpointing=True, max_pending_saves=2)
    old = f"s3://{bucket}/run/old.ckpt"
    try:
        io.save_checkpoint(state(1), old)
        io.wait_for_saves(timeout=60)
        gate = Gate()
        # The removal is queued while the failing save is still pending, as Lightning does it.
        io.save_checkpoint({"gate": gate, "fn": functools.partial(lambda: 1)}, f"s3://{bucket}/run/new.ckpt")
        io.remove_checkpoint(old)
        gate.open()
        wait_until_idle(io)
        assert keys(s3_client, bucket) == {"run/old.ckpt"}
        with pytest.raises(BackgroundSaveError, match=r"new\.ckpt"):
            io.wait_for_saves(timeout=60)
    finally:
        io.teardown()


def test_same_step_last_clean_up_is_off_by_default_and_works_when_on(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    stale = f"s3://{bucket}/run/gpt--step=900-loss=6.50-last.ckpt"
    fresh = f"s3://{bucket}/run/gpt--step=900-loss=6.47-last.ckpt"
    other_step = f"s3://{bucket}/run/gpt--step=800-loss=7.00-last.ckpt"
    default = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    for url in (stale, other_step, fresh):
        default.save_checkpoint(state(), url)
    assert len(keys(s3_client, bucket)) == 3
    default.teardown()

    cleaning = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, clean_same_step_last=True)
    cleaning.save_checkpoint(state(), fresh)
    cleaning.teardown()
    assert keys(s3_client, bucket) == {
        "run/gpt--step=900-loss=6.47-last.ckpt",
        "run/gpt--step=800-loss=7.00-last.ckpt",
    }


def test_cpu_snapshots_reuse_host_buffers_and_keep_shared_storage() -> None:
    from s3_checkpoint_io.background.snapshot import HostBufferPool, take_snapshot

    pool = HostBufferPool()
    weight = torch.randn(64, 64)
    live = {"w": weight, "w_t": weight.t(), "bias": torch.zeros(64), "step": 1}
    first = take_snapshot(live, pool)
    weight.add_(1.0)  # the optimizer goes on; the snapshot must not see it
    assert torch.equal(first.state["w"] + 1.0, weight)
    assert first.state["w"].untyped_storage().data_ptr() == first.state["w_t"].untyped_storage().data_ptr()
    addresses = sorted(b.data_ptr() for b in first.borrowed)
    pool.give_back(first.borrowed)
    second = take_snapshot(live, pool)
    assert sorted(b.data_ptr() for b in second.borrowed) == addresses  # reused, not allocated anew
    assert torch.equal(second.state["w"], weight)
    pool.give_back(second.borrowed)
    third = take_snapshot({"other": torch.ones(3)}, pool)  # the model changed: old buffers are dropped
    assert len(third.borrowed) == 1
    pool.give_back(third.borrowed)
    assert take_snapshot({"w": weight}, pool).borrowed[0].data_ptr() not in addresses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned-buffer path needs a CUDA device")
def test_cuda_tensors_are_snapshotted_into_reused_pinned_buffers() -> None:
    from s3_checkpoint_io.background.snapshot import HostBufferPool, take_snapshot

    pool = HostBufferPool()
    weight = torch.randn(256, 256, device="cuda")
    live = {"w": weight, "w_t": weight.t(), "step": 1}
    first = take_snapshot(live, pool)
    weight.add_(1.0)
    copied = first.state["w"]
    assert copied.device.type == "cpu"
    assert copied.is_pinned()
    assert torch.equal(copied + 1.0, weight.cpu())
    assert copied.untyped_storage().data_ptr() == first.state["w_t"].untyped_storage().data_ptr()
    pinned = first.borrowed[0].data_ptr()
    pool.give_back(first.borrowed)
    second = take_snapshot(live, pool)
    assert second.borrowed[0].data_ptr() == pinned  # reused, not pinned anew
