"""What a loaded checkpoint keeps in memory once most of it has been dropped."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch

from checkpoint_io.engine.load_memory_targets import resident_after_keeping_one_small_tensor
from s3_checkpoint_io import S3CheckpointIO
from s3_checkpoint_io.engine import load
from s3_checkpoint_io.engine.memory_file import MemoryFile
from support.ranks import spawn

pytestmark = pytest.mark.slow

BIG_MIB = 96


def test_keeping_one_small_tensor_does_not_keep_the_whole_checkpoint_resident(
    s3_server: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/big.ckpt"
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    n = BIG_MIB * 2**20 // 4
    io.save_checkpoint({"big": torch.arange(n, dtype=torch.int32), "small": torch.tensor([1.5, 2.5])}, url)
    io.save_checkpoint({"w": torch.ones(4)}, url + ".warmup")
    io.teardown()
    out = tmp_path / "resident.json"
    child = spawn(resident_after_keeping_one_small_tensor, [url, str(out)])
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output.decode(errors="replace")
    measured = json.loads(out.read_text())
    assert measured["sum"] == n * (n - 1) // 2  # every value arrived
    assert measured["small"] == [1.5, 2.5]
    assert measured["loaded_rise_mib"] > 0.8 * BIG_MIB, measured  # the load itself was measured
    # what is left is the small tensor, not a mapping of the whole downloaded checkpoint
    assert measured["memfd_mappings"] == 0, measured
    assert measured["kept_rise_mib"] < 0.25 * BIG_MIB, measured


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "ordinary-memory"])
def test_a_load_of_many_storages_sharing_pages_is_exact(
    s3_server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    # a 24 MiB checkpoint is loaded from ordinary memory; with the threshold at 0 it takes the mapped
    # path that checkpoints from MAPPED_LOAD_MIN_BYTES on take
    made: list[int] = []

    class CountedMemoryFile(MemoryFile):
        def __init__(self, size: int) -> None:
            made.append(size)
            super().__init__(size)

    monkeypatch.setattr(load, "MemoryFile", CountedMemoryFile)
    if mapped:
        monkeypatch.setattr(load, "MAPPED_LOAD_MIN_BYTES", 0)
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(1, 300_000, (40,), generator=generator).tolist()
    tensors = [torch.randint(-1000, 1000, (n,), generator=generator, dtype=torch.int32) for n in sizes]
    state = {"t": tensors, "views": [t[1::3] for t in tensors[:10]], "f": torch.randn(5, 7).t()}
    url = f"s3://{bucket}/run/many.ckpt"
    io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5)
    try:
        io.save_checkpoint(state, url)
        loaded = io.load_checkpoint(url)
    finally:
        io.teardown()
    for original, copy in zip(tensors, loaded["t"], strict=True):
        assert torch.equal(copy, original)
    for index, (view, copy) in enumerate(zip(state["views"], loaded["views"], strict=True)):
        assert torch.equal(copy, view)
        assert copy.untyped_storage().data_ptr() == loaded["t"][index].untyped_storage().data_ptr()
    assert torch.equal(loaded["f"], state["f"])
    assert loaded["f"].stride() == state["f"].stride()
    assert len(made) == (1 if mapped else 0)
