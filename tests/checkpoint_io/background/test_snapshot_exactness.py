"""An asynchronous save writes exactly what a synchronous save of the same state writes, byte for byte."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3_checkpoint_io import S3CheckpointIO

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
]


class SyncAndAsync:
    """Saves one state both ways under fresh keys and returns the two objects' bytes."""

    def __init__(self, bucket: str, s3_client: Any) -> None:
        self.bucket, self.s3_client = bucket, s3_client
        self.sync = S3CheckpointIO(f"s3://{bucket}/sync", chunk_size_MB=5)
        self.async_ = S3CheckpointIO(f"s3://{bucket}/async", chunk_size_MB=5, async_checkpointing=True)
        self.numbers = itertools.count()

    def both(self, checkpoint: dict[str, Any]) -> tuple[bytes, bytes]:
        n = next(self.numbers)
        self.sync.save_checkpoint(checkpoint, f"s3://{self.bucket}/sync/{n}.ckpt")
        self.async_.save_checkpoint(checkpoint, f"s3://{self.bucket}/async/{n}.ckpt")
        self.async_.wait_for_saves(timeout=60)
        return self.read(f"sync/{n}.ckpt"), self.read(f"async/{n}.ckpt")

    def read(self, key: str) -> bytes:
        body: bytes = self.s3_client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def close(self) -> None:
        self.sync.teardown()
        self.async_.teardown()


@pytest.fixture
def saves(s3_server: Any, bucket: str, s3_client: Any) -> Iterator[SyncAndAsync]:
    both = SyncAndAsync(bucket, s3_client)
    yield both
    both.close()


@st.composite
def bases(draw: st.DrawFn) -> torch.Tensor:
    """A 1-D tensor of some dtype owning its storage; float ones may require grad."""
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 24))
    base = (torch.randn(n, dtype=torch.float64) * 50).to(dtype) if dtype.is_floating_point else None
    if dtype.is_complex:
        base = torch.randn(n, dtype=dtype)
    elif base is None:
        base = torch.randint(0, 2 if dtype == torch.bool else 100, (n,)).to(dtype)
    if dtype.is_floating_point and draw(st.booleans()):
        base.requires_grad_(True)
    return base


@st.composite
def views(draw: st.DrawFn, base: torch.Tensor) -> torch.Tensor:
    """A strided view of ``base``: any offset, shape and strides (overlapping and 0 included) in bounds."""
    n = base.numel()
    if n == 0:
        return base.detach()[0:0]
    rank = draw(st.integers(0, 3))
    sizes = [draw(st.integers(0, 4)) for _ in range(rank)]
    strides = [draw(st.integers(0, 3)) for _ in range(rank)]
    span = sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True) if size > 0)
    if span >= n:
        return base.detach()
    offset = draw(st.integers(0, n - 1 - span))
    view = base.detach().as_strided(sizes, strides, offset)
    if base.dtype.is_complex and draw(st.booleans()):
        view = view.conj()  # a lazy conjugate view: the storage holds the unconjugated values
    if base.dtype.is_signed and not base.dtype.is_complex and draw(st.booleans()):
        view = torch._neg_view(view)
    return view


@st.composite
def tensor_pools(draw: st.DrawFn) -> list[torch.Tensor]:
    """Tensors that share storages in every way a checkpoint can: views, aliases at one address."""
    pool: list[torch.Tensor] = []
    for base in draw(st.lists(bases(), min_size=1, max_size=3)):
        pool.append(base)
        if base.dtype.is_floating_point and draw(st.booleans()):
            pool.append(torch.nn.Parameter(base.detach(), requires_grad=base.requires_grad))
        pool.extend(draw(st.lists(views(base), max_size=4)))
    if draw(st.booleans()):
        # two storages at the same address but of different sizes
        array = np.arange(draw(st.integers(2, 16)), dtype=np.float32)
        pool += [torch.from_numpy(array[: len(array) // 2]), torch.from_numpy(array)]
    return pool


@st.composite
def checkpoints(draw: st.DrawFn) -> dict[str, Any]:
    pool = draw(tensor_pools())
    leaves = st.sampled_from(pool) | st.none() | st.integers() | st.text(max_size=4) | st.floats()
    nested = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=12,
    )
    state: dict[str, Any] = draw(st.dictionaries(st.text(max_size=4), nested, max_size=4))
    state["all"] = pool  # every tensor at least once, some twice (the same object)
    return state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(checkpoint=checkpoints())
def test_async_save_writes_the_same_bytes_as_a_sync_save(saves: SyncAndAsync, checkpoint: Any) -> None:
    written_sync, written_async = saves.both(checkpoint)
    assert written_async == written_sync


def test_views_at_one_address_of_different_sizes_keep_their_own_bytes(saves: SyncAndAsync) -> None:
    array = np.arange(16, dtype=np.float32)
    short, whole = torch.from_numpy(array[:8]), torch.from_numpy(array)
    written_sync, written_async = saves.both({"short": short, "whole": whole})
    assert written_async == written_sync
    loaded = saves.async_.load_checkpoint(f"s3://{saves.bucket}/async/0.ckpt")
    assert torch.equal(loaded["whole"], whole)


def test_lazy_conjugate_and_negative_views_keep_their_values(saves: SyncAndAsync) -> None:
    values = torch.randn(6, dtype=torch.complex64)
    checkpoint = {"conj": values.conj(), "neg": torch._neg_view(torch.randn(5)), "plain": values}
    written_sync, written_async = saves.both(checkpoint)
    assert written_async == written_sync
    loaded = saves.async_.load_checkpoint(f"s3://{saves.bucket}/async/0.ckpt")
    assert loaded["conj"].is_conj()
    assert torch.equal(loaded["conj"].resolve_conj(), values.conj().resolve_conj())
    assert torch.equal(loaded["neg"].resolve_neg(), checkpoint["neg"].resolve_neg())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.quantize_per_tensor(torch.randn(8), 0.1, 3, torch.qint8), id="quantized"),
        pytest.param(
            lambda: torch.quantize_per_channel(
                torch.randn(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.quint8
            ),
            id="quantized-per-channel",
        ),
        pytest.param(lambda: torch.nested.nested_tensor([torch.randn(2), torch.randn(3)]), id="nested"),
        pytest.param(lambda: torch.randn(4, 4).to_sparse(), id="sparse"),
    ],
)
def test_unusual_tensors_are_saved_as_a_sync_save_would(saves: SyncAndAsync, make: Any) -> None:
    tensor = make()
    written_sync, written_async = saves.both({"t": tensor, "n": 1})
    assert written_async == written_sync


def test_an_entry_that_cannot_be_snapshotted_is_named_by_its_key_path(saves: SyncAndAsync) -> None:
    class Refuses(torch.Tensor):
        def __reduce_ex__(self, protocol: Any) -> Any:
            raise RuntimeError("not today")

    bad = torch.randn(3).as_subclass(Refuses)
    with pytest.raises(TypeError, match=r"checkpoint\['optimizer'\]\[0\]\['m'\]"):
        saves.async_.save_checkpoint({"optimizer": [{"m": bad}]}, f"s3://{saves.bucket}/async/x.ckpt")
