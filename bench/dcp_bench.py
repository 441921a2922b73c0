"""The DCP (sharded checkpoint) benchmark: ``./bench/run --dcp`` (``--quick`` for a smoke run).

Saves and loads a state split over 1, 2 and 4 gloo CPU ranks with every DCP storage layer: ours
(``s3_checkpoint_io.dcp``), s3torchconnector's, torch's FsspecWriter/Reader over s3fs, and
multi-storage-client's, one SeaweedFS on 127.0.0.1. Reports aggregate MiB/s, client CPU seconds per
GiB (summed over the ranks), requests per save and GETs of the metadata per load, to
bench/results/dcp-latest.md and .json. Measurements only: nothing here asserts speed.
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import harness

log = logging.getLogger("bench.dcp")

DCP_PEER_VENVS = {"ours-dcp": "ours", "s3torch-dcp": "s3torch", "fsspec-s3fs-dcp": "s3fs", "msc-dcp": "msc"}
RANKS = (1, 2, 4)
RUNNER_TIMEOUT_S = 1500
FIRST_DIST_PORT = 29700  # run.py's jobs count up from 29500


def run(sizes: list[int], quick: bool, out: pathlib.Path, peers: list[str]) -> int:
    """Run the chosen peers (of ``DCP_PEER_VENVS``) at every rank count and size; write the report.

    Returns:
        The exit code.
    """
    started = time.time()
    pythons, skipped = harness.peer_pythons((DCP_PEER_VENVS[p] for p in peers), out / "logs")
    peers = [p for p in peers if DCP_PEER_VENVS[p] in pythons]
    results: list[dict[str, Any]] = []
    port = FIRST_DIST_PORT
    with harness.local_s3("s3ckpt-dcp-bench-") as s3:
        env = s3.runner_env()
        for size in sizes:
            for ranks in RANKS:
                for peer in peers:
                    port += 1
                    cfg = {
                        "peer": peer,
                        "ranks": ranks,
                        "size_bytes": size,
                        "reps": 1 if quick else 2,
                        "bucket": harness.bucket_name(peer),
                        "metrics_url": s3.server.metrics_url,
                        "chunk_size_MB": 16 if quick else 64,
                        "write_concurrency": 10,
                        "read_concurrency": 15,
                        "dist_port": port,
                        "tag": f"{harness.size_label(size)}-{ranks}r-{peer}",
                    }
                    log.info("DCP: %s on %d rank(s), %s", peer, ranks, harness.size_text(size))
                    result = s3.run_job(
                        pythons[DCP_PEER_VENVS[peer]], "dcp_runner.py", cfg, env, RUNNER_TIMEOUT_S
                    )
                    if "error" in result:
                        log.warning("  %s failed: %s", peer, _last_line(result["error"]))
                    results.append(result)
    meta = harness.run_metadata(started, skipped, quick=quick)
    document = report(results, meta)
    harness.write_results(out, "dcp-", meta, results, document)
    print(document)
    return 0


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """A markdown table: one row per peer and rank count (medians over the repetitions)."""
    lines = [
        "# DCP (sharded) checkpoint benchmark",
        "",
        f"{meta['date']}; {meta['machine']}; {meta['server']}."
        + (" **Quick smoke run: indicative only.**" if meta["quick"] else ""),
        "",
        "| peer | ranks | size | save MiB/s | load MiB/s | save CPU s/GiB | load CPU s/GiB | requests/save "
        "| metadata GETs/load | async_save stall ms | stall / bare clone |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        size = harness.size_text(r["size_bytes"])
        if "error" in r:
            lines.append(f"| {r['peer']} | {r['ranks']} | {size} | failed: {_last_line(r['error'])} |||||||")
            continue
        reps = r["reps"]
        gib = r["size_bytes"] / (1 << 30)
        mib = r["size_bytes"] / (1 << 20)
        cells = [
            r["peer"],
            str(r["ranks"]),
            size,
            f"{mib / _median(reps, 'save_s'):.0f}",
            f"{mib / _median(reps, 'load_s'):.0f}",
            f"{_median(reps, 'save_cpu_s') / gib:.1f}",
            f"{_median(reps, 'load_cpu_s') / gib:.1f}",
            f"{_median(reps, 'save_requests'):.0f}",
            str(r["metadata_gets_per_load"]),
            *_stall_cells(r.get("async")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if meta["skipped_venvs"]:
        lines += ["", f"Skipped (could not install): {meta['skipped_venvs']}"]
    return "\n".join(lines) + "\n"


def _median(reps: list[dict[str, Any]], key: str) -> float:
    """The upper median of ``key`` over the repetitions (the middle one for an odd count)."""
    values = sorted(rep[key] for rep in reps)
    return values[len(values) // 2]


def _stall_cells(ranks: list[dict[str, float]] | None) -> list[str]:
    """The slowest rank's async_save stall, and the largest stall / bare-clone ratio over the ranks."""
    if not ranks:
        return ["", ""]
    worst = max(rank["stall_s"] for rank in ranks)
    ratio = max(rank["stall_s"] / rank["clone_s"] for rank in ranks)
    return [f"{worst * 1000:.0f}", f"{ratio:.1f}x"]


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1][:80]
