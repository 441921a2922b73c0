"""A conversion in a child process of its own, reporting its peak memory growth (see test_convert_memory)."""

from __future__ import annotations

import json
import pathlib

import psutil

from s3_checkpoint_io.convert import to_safetensors
from support.stores import small_store


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows it."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def convert(source: str, destination: str) -> None:
    """Convert ``source`` to safetensors at ``destination`` and print the peak RSS growth as JSON."""
    with small_store() as store:
        store.head(source + "/.metadata")  # clients and pools made before the baseline
        baseline = psutil.Process().memory_info().rss
        if not _reset_peak():
            raise RuntimeError("cannot reset VmHWM here: the peak would include start-up")
        result = to_safetensors(source, destination, store=store)
        peak = _peak_rss()
    print(json.dumps({"growth": peak - baseline, "written": result.bytes}))
