"""The ``s3ckpt`` plugin: what the CLI in s3-utils cannot do without torch.

Registered in the ``s3ckpt.plugins`` entry-point group, so ``s3ckpt verify`` also checks that a
checkpoint loads, ``verify``, ``cp``, ``cleanup`` and ``ls`` read which shards (and tensors) a sharded
checkpoint's commit references, and ``s3ckpt bench --torch`` times a real ``S3CheckpointIO`` save and load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from s3_checkpoint_io.dcp.commit_references import read_commit, shard_extents
from s3_checkpoint_io.engine.load import load_from_buffer
from s3_checkpoint_io.lightning.checkpoint_io import S3CheckpointIO
from s3_dirpath_utils import join_s3_url
from s3_utils import S3Store
from s3_utils.cli.plugins import CommitSummary, ConvertReport, ConvertRequest, SaveLoadTiming, TensorInfo
from s3_utils.cli.tuning import Recommendation
from s3_utils.limits import MiB

_BENCH_TENSOR_MiB = 64


def describe_checkpoint(checkpoint: Any) -> str:
    """One line about a loaded checkpoint: its kind, step, epoch and how many tensors it holds.

    Args:
        checkpoint: what ``torch.load`` returned.

    Returns:
        The description.
    """
    if not isinstance(checkpoint, dict):
        return f"loads as a {type(checkpoint).__name__} (not a Lightning checkpoint dict)"
    tensors, numbers = _count_tensors(checkpoint)
    parts = [f"{tensors} tensors ({numbers:,} values)"]
    for key in ("global_step", "epoch"):
        if key in checkpoint:
            parts.append(f"{key}={checkpoint[key]}")
    kind = "Lightning checkpoint" if "state_dict" in checkpoint else "dict"
    keys = ", ".join(sorted(str(k) for k in checkpoint)[:8])
    return f"{kind}: {', '.join(parts)}; keys: {keys}"


def _count_tensors(value: Any) -> tuple[int, int]:
    if isinstance(value, torch.Tensor):
        return 1, value.numel()
    if isinstance(value, dict):
        items: list[Any] = list(value.values())
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return 0, 0
    count = numbers = 0
    for item in items:
        c, n = _count_tensors(item)
        count += c
        numbers += n
    return count, numbers


class TorchCheckpointPlugin:
    """Loads checkpoints with torch and times ``S3CheckpointIO`` for ``s3ckpt``."""

    name = "s3-checkpoint-io"

    def check_loads(self, data: bytearray, url: str, weights_only: bool) -> str:
        """``torch.load`` the bytes on the CPU and describe what came out.

        Args:
            data: the whole object.
            url: where it came from, for messages.
            weights_only: refuse arbitrary pickled objects.

        Returns:
            One line describing the checkpoint.

        Raises:
            CorruptCheckpointError: if the bytes are not a readable torch checkpoint.
            WeightsOnlyLoadError: if ``weights_only`` refused an object in it.
        """
        return describe_checkpoint(load_from_buffer(data, url, "cpu", weights_only))

    def shard_extents(self, commit: bytearray, url: str) -> dict[str, int]:
        """The shard objects a sharded checkpoint's commit references (read without running pickled code).

        Args:
            commit: the commit object's bytes.
            url: where it came from, for messages.

        Returns:
            ``{shard name under the prefix: bytes of it the checkpoint uses}``.

        Raises:
            CorruptCheckpointError: if the bytes are not a commit ``S3StorageWriter`` wrote.
        """
        return shard_extents(commit, url)

    def describe_commit(self, commit: bytearray, url: str) -> CommitSummary:
        """A sharded checkpoint's layout, save, shards and tensors, from its commit alone (one GET).

        Args:
            commit: the commit object's bytes.
            url: where it came from, for messages.

        Returns:
            The summary; tensors in name order, each with its global shape.

        Raises:
            CorruptCheckpointError: if the bytes are not DCP metadata this package reads.
        """
        checkpoint = read_commit(commit, url)
        tensors = [
            TensorInfo(name, str(dtype).removeprefix("torch."), shape, nbytes)
            for name, dtype, shape, nbytes in checkpoint.tensors()
        ]
        return CommitSummary(checkpoint.kind, checkpoint.save_id, checkpoint.extents(), tensors)

    def describe_file(self, store: S3Store, url: str) -> list[TensorInfo]:
        """A ``torch.save`` object's tensors, from ranged reads of its zip directory and ``data.pkl``.

        Args:
            store: the store to read with.
            url: the object.

        Returns:
            The tensors in key order (nested keys joined with ``.``).

        Raises:
            CorruptCheckpointError: if it is not a zip-format ``torch.save`` file.
        """
        from s3_checkpoint_io.convert.listing import list_file_tensors

        return [
            TensorInfo(t.key, str(t.dtype).removeprefix("torch."), t.shape, t.nbytes)
            for t in list_file_tensors(store, url)
        ]

    def convert(
        self, store: S3Store, request: ConvertRequest, on_progress: Callable[[int], None] | None
    ) -> ConvertReport:
        """Convert a checkpoint with :mod:`s3_checkpoint_io.convert` (``s3ckpt convert``).

        Args:
            store: the store for ``s3://`` URLs.
            request: what to convert, where, how.
            on_progress: told the bytes of each piece written (safetensors).

        Returns:
            What was written.

        Raises:
            ValueError: for an unknown ``to`` or ``dtype``, and what the converters raise.
        """
        from s3_checkpoint_io.convert import Selection, to_safetensors, to_torch_save

        if request.to == "torch":
            result = to_torch_save(
                request.source,
                request.destination,
                overwrite=request.overwrite,
                trust=request.trust,
                store=store,
            )
        elif request.to == "safetensors":
            selection = Selection(request.include, request.strip_prefix, _dtype(request.dtype))
            result = to_safetensors(
                request.source,
                request.destination,
                selection=selection,
                max_file_bytes=request.max_file_bytes,
                overwrite=request.overwrite,
                trust=request.trust,
                store=store,
                on_progress=on_progress,
            )
        else:
            raise ValueError(f"cannot convert to {request.to!r}: choose safetensors or torch")
        return ConvertReport(list(result.files), result.tensors, result.seconds)

    def bench_save_load(self, prefix_url: str, size_MB: int, settings: Recommendation) -> SaveLoadTiming:
        """Save a random state dict of about ``size_MB`` MiB through ``S3CheckpointIO`` and load it back.

        Args:
            prefix_url: a scratch prefix; the checkpoint is removed afterwards.
            size_MB: approximate size in MiB.
            settings: chunk size and concurrencies to use.

        Returns:
            Save and load seconds, and the bytes written.
        """
        generator = torch.Generator().manual_seed(0)
        state: dict[str, Any] = {"state_dict": {}, "global_step": 0}
        remaining = size_MB * MiB // 4
        index = 0
        while remaining > 0:
            count = min(remaining, _BENCH_TENSOR_MiB * MiB // 4)
            state["state_dict"][f"layer{index}.weight"] = torch.rand(count, generator=generator)
            remaining -= count
            index += 1
        url = join_s3_url(prefix_url, "torch-bench.ckpt")
        io = S3CheckpointIO(
            prefix_url,
            chunk_size_MB=settings.chunk_size_MB,
            max_read_concurrency=settings.max_read_concurrency,
            max_write_concurrency=settings.max_write_concurrency,
        )
        try:
            started = time.perf_counter()
            io.save_checkpoint(state, url)
            save_s = time.perf_counter() - started
            stats = io.last_save_stats
            started = time.perf_counter()
            io.load_checkpoint(url, weights_only=True)
            load_s = time.perf_counter() - started
            io.remove_checkpoint(url)
        finally:
            io.teardown()
        return SaveLoadTiming(
            label="torch state_dict via S3CheckpointIO",
            size_bytes=stats.bytes if stats is not None else size_MB * MiB,
            save_s=save_s,
            load_s=load_s,
        )


_DTYPE_ALIASES = {
    "bf16": "bfloat16",
    "fp16": "float16",
    "f16": "float16",
    "fp32": "float32",
    "f32": "float32",
    "fp64": "float64",
    "f64": "float64",
    "half": "float16",
    "float": "float32",
}


def _dtype(name: str | None) -> torch.dtype | None:
    """The torch dtype a CLI name means (``bf16``, ``float16``, ...)."""
    if name is None:
        return None
    dtype = getattr(torch, _DTYPE_ALIASES.get(name.lower(), name.lower()), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"--dtype {name}: not a floating-point torch dtype; use bf16, fp16, fp32 or fp64")
    return dtype


plugin = TorchCheckpointPlugin()
"""The object the ``s3ckpt.plugins`` entry point names."""
