"""What test_load_memory.py runs in a fresh interpreter (via support.ranks.spawn): a load, then its memory."""

from __future__ import annotations

import gc
import json
import pathlib

import psutil

from s3_checkpoint_io import S3CheckpointIO


def resident_after_keeping_one_small_tensor(url: str, out_file: str) -> None:
    """Load ``url``, read every tensor, keep only the small one, and report what stays resident."""
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, max_read_concurrency=4)
    io.load_checkpoint(url + ".warmup")  # clients and threads exist now
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    loaded = io.load_checkpoint(url)
    total = int(loaded["big"].sum())  # every page of the big tensor has been read
    loaded_rise = process.memory_info().rss - before
    kept = loaded["small"]
    del loaded
    gc.collect()
    kept_rise = process.memory_info().rss - before
    mapped = [line for line in pathlib.Path("/proc/self/maps").read_text().splitlines() if "memfd:" in line]
    pathlib.Path(out_file).write_text(
        json.dumps(
            {
                "sum": total,
                "small": kept.tolist(),
                "loaded_rise_mib": loaded_rise / 2**20,
                "kept_rise_mib": kept_rise / 2**20,
                "memfd_mappings": len(mapped),
            }
        )
    )
