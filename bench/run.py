"""The one benchmark command: our S3 checkpointing against every peer, on one local S3 server, one run.

    ./bench/run                 # default: 16 MiB and 512 MiB state dicts, loopback and +30 ms per request
    ./bench/run --quick         # smoke run: 16 MiB only, one repetition
    ./bench/run --sizes 16M,512M,2G
    ./bench/run --dcp [--quick]  # sharded (DCP) saves and loads on 1, 2, 4 ranks (bench/dcp_bench.py)
    ./bench/run --scale [--scale-ranks 8,16]  # 8 to 32 ranks through the request-rate emulator

It builds what it needs (one virtualenv per peer under bench/.venvs/, reused when unchanged), starts
SeaweedFS on 127.0.0.1, runs each peer in a subprocess of its own venv, and writes
bench/results/latest.md, latest.json and PNG plots. Measurements only: nothing here asserts speed.
What this shares with the DCP benchmark (server, runner subprocess, cleanup, result files) is in
bench/harness.py.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import dcp_bench  # noqa: E402
import harness  # noqa: E402
import scale_bench  # noqa: E402
import venvs  # noqa: E402
from server import SeaweedServer  # noqa: E402

log = logging.getLogger("bench")

# peer -> the venv it runs in
PEER_VENVS = {
    "ours-sync": "ours",
    "ours-async": "ours",
    "ours-async-nice0": "ours",  # ours-async with the upload helper at the trainer's priority
    "nemo-sync": "nemo",
    "nemo-async": "nemo",
    "s3torchconnector": "s3torch",
    "s3torchconnector-async": "s3torch",  # in Lightning's AsyncCheckpointIO, as a Lightning user runs it
    "lightning-s3fs": "s3fs",
    "lightning-s3fs-async": "s3fs",
    "raw-boto3": "raw",
    "ours-transfer": "ours",  # transfer layer only: s3_utils.S3Store on pre-serialized bytes
    "nemo-s3utils": "nemo",  # transfer layer only: NeMo's S3Utils on the same bytes
    # transfer engines on the same pre-serialized bytes (--engines)
    "raw-boto3-crt": "raw",  # boto3's transfer manager with preferred_transfer_client="crt"
    "crt-transfer": "ours",  # awscrt.s3.S3Client used directly (C threads, C checksums)
}
# run only when named in --peers: ablations of ours, not peers
OPT_IN_PEERS = ("ours-async-nice0",)
# the engine comparison: which transfer engine moves a checkpoint's bytes fastest and cheapest
ENGINE_PEERS = ("ours-transfer", "raw-boto3", "raw-boto3-crt", "crt-transfer")
RUNNER_TIMEOUT_S = 900
FIRST_DIST_PORT = 29500  # the DCP benchmark's jobs count up from 29700


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16M,512M", help="state-dict sizes (default 16M,512M; add 2G)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16M only, 1 repetition, short sweep")
    parser.add_argument(
        "--peers", help="comma-separated subset of peers (default: every peer of the chosen benchmark)"
    )
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
    scale = parser.add_argument_group(
        "--scale: many ranks through the request-rate emulator (bench/scale_bench.py)"
    )
    scale.add_argument("--scale", action="store_true", help="the scale benchmark instead")
    scale.add_argument("--scale-ranks", default="8,16,32", help="rank counts (default 8,16,32)")
    scale.add_argument("--scale-size", default="256M", help="sharded state, in all (default 256M)")
    scale.add_argument("--scale-resume-size", default="64M", help="single-file checkpoint (default 64M)")
    scale.add_argument(
        "--scale-replicated-size", default="32M", help="items every rank holds alike (default 32M; 0M: none)"
    )
    scale.add_argument("--scale-chunk-MB", type=int, default=8, help="our part size (default 8)")
    scale.add_argument("--scale-put-per-s", type=float, default=10.0, help="PUT/s per prefix (default 10)")
    scale.add_argument("--scale-get-per-s", type=float, default=20.0, help="GET/s per prefix (default 20)")
    scale.add_argument(
        "--scale-split-after-s",
        type=float,
        help="start each bucket as one partition, split a prefix off after this many busy seconds "
        "(default: every prefix its own partition)",
    )
    scale.add_argument(
        "--scale-sharded-only",
        action="store_true",
        help="only the sharded save and load cases (no single-file resume; add --scale-replicated-size 0M "
        "to skip the replicated case too)",
    )
    scale.add_argument(
        "--scale-unpaced",
        action="store_true",
        help="do not tell ours the emulator's per-prefix rates (it paces to S3's own, which never bind here)",
    )
    args = parser.parse_args(argv)
    try:
        args.sizes = [harness.parse_size(s) for s in ("16M" if args.quick else args.sizes).split(",")]
        args.scale_size = harness.parse_size(args.scale_size)
        args.scale_resume_size = harness.parse_size(args.scale_resume_size)
        args.scale_replicated_size = harness.parse_size(args.scale_replicated_size)
        args.scale_ranks = [int(r) for r in args.scale_ranks.split(",")]
    except ValueError as exc:
        parser.error(str(exc))
    known = dcp_bench.DCP_PEER_VENVS if args.dcp else PEER_VENVS
    if args.engines and not args.dcp:
        args.peers = list(ENGINE_PEERS)
    elif args.peers:
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    else:
        args.peers = [p for p in known if p not in OPT_IN_PEERS]
    unknown = sorted(set(args.peers) - set(known))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {sorted(known)}")
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


def pass_jobs(
    peers: list[str], sizes: list[int], quick: bool, sweep: bool
) -> list[tuple[str, int, int | None]]:
    """The jobs of one network pass as (peer, size, sweep concurrency): every peer at every size, then
    with ``sweep`` (the added-latency pass) ours-sync at rising concurrency."""
    jobs: list[tuple[str, int, int | None]] = [(peer, size, None) for size in sizes for peer in peers]
    if sweep and "ours-sync" in peers:
        sweep_size = (16 << 20) if quick else min(max(sizes), 256 << 20)
        jobs += [("ours-sync", sweep_size, level) for level in ((1, 2, 4, 8) if quick else (1, 2, 4, 8, 16))]
    return jobs


def default_reps(size: int) -> int:
    """Repetitions at ``size`` unless --reps says: 3 below 100 MiB, 2 below 1 GiB, else 1."""
    return 3 if size < 100 << 20 else 2 if size < 1 << 30 else 1


def runner_config(
    args: argparse.Namespace,
    network: str,
    job: tuple[str, int, int | None],
    server: SeaweedServer,
    dist_port: int,
) -> dict[str, Any]:
    """runners/runner.py's config for one job of the pass over ``network`` on ``server``."""
    peer, size, conc = job
    tag = f"{network}-{harness.size_label(size)}-{peer}" + (f"-c{conc}" if conc else "")
    reps = 1 if args.quick or conc else args.reps or default_reps(size)
    return {
        "peer": peer,
        "bucket": harness.bucket_name(peer),
        "size_bytes": size,
        "reps": reps,
        "metrics_url": server.metrics_url,
        "train": network == "loopback" and not conc,
        "chunk_size_MB": 8 if conc else 64,
        "write_concurrency": conc or 10,
        "read_concurrency": conc or 15,
        "tag": tag.replace("+", "lat"),
        "dist_port": dist_port,
        "server_pid": server.process.pid,  # pinned to CPU 1 for the pinned training pass
    }


def run(args: argparse.Namespace) -> int:
    """Every chosen peer at every size, on loopback and then (unless --no-latency) through the latency
    proxy; write latest.json, latest.md and the plots. Returns the exit code."""
    import plots
    import report

    started = time.time()
    pythons, skipped = harness.peer_pythons((PEER_VENVS[p] for p in args.peers), args.out / "logs")
    peers = [p for p in args.peers if PEER_VENVS[p] in pythons]
    passes = [("loopback", 0.0)] + ([] if args.no_latency else [(f"+{args.latency_ms:g}ms", args.latency_ms)])
    results: list[dict[str, Any]] = []
    dist_port = FIRST_DIST_PORT
    with harness.local_s3("s3ckpt-bench-") as s3:
        for network, delay in passes:
            with contextlib.ExitStack() as stack:
                endpoint = s3.server.endpoint_url
                if delay:
                    endpoint = stack.enter_context(latency_proxy(s3.server.s3_port, delay, s3.workdir))
                env = s3.runner_env(endpoint)
                for job in pass_jobs(peers, args.sizes, args.quick, sweep=bool(delay)):
                    peer, size, conc = job
                    dist_port += 1
                    cfg = runner_config(args, network, job, s3.server, dist_port)
                    concurrency = f" (concurrency {conc})" if conc else ""
                    log.info("%s: %s at %s%s", network, peer, harness.size_label(size), concurrency)
                    result = s3.run_job(pythons[PEER_VENVS[peer]], "runner.py", cfg, env, RUNNER_TIMEOUT_S)
                    result.update(network=network, sweep_concurrency=conc, chunk_size_MB=cfg["chunk_size_MB"])
                    if "error" in result:
                        log.warning("  %s failed: %s", peer, result["error"].splitlines()[0][:300])
                    results.append(result)
    meta = harness.run_metadata(
        started,
        skipped,
        sizes=[harness.size_label(s) for s in args.sizes],
        latency_ms=None if args.no_latency else args.latency_ms,
    )
    document = report.build(results, meta)
    harness.write_results(args.out, "", meta, results, document)
    for path in plots.draw(results, args.out):
        log.info("plot %s", path)
    print(document)
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    bootstrap_tools_venv()
    if args.dcp:
        return dcp_bench.run(args.sizes, args.quick, args.out, args.peers)
    if args.scale:
        return scale_bench.run(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
