"""Resume at scale: a single-file checkpoint loaded by every rank at once, per rank vs once per node.

Every rank of an N-rank gloo job (CPU processes on this machine) makes the load Lightning's DDP resume
makes, ``S3CheckpointIO.load_checkpoint`` inside ``every_rank_loads()``, with
``read_once_per_node=False`` (each rank downloads: the behaviour before) and ``True`` (one rank per node
downloads, the node's others receive its bytes over gloo). S3 is moto's server behind the tests'
FaultProxy, which counts the requests: each download is one HEAD and the object's ranged GETs, so MiB
fetched is the HEADs times the object's size. Resume time is the slowest rank's load, from a barrier to
the loaded dict; load peak is the most a rank's resident memory grew during it (``VmHWM`` reset through
``/proc/self/clear_refs`` just before, minus ``VmRSS`` then).

    python bench/resume_once.py --ranks 4 8 --size-mib 64 --repeat 2

Prints a Markdown table (docs/tuning.md, "Resume at scale", holds a run of it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.parse

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
CHUNK_MIB = 16


def rank_load(url: str, endpoint_url: str, read_once: str, out_dir: str) -> None:
    """One rank: the resume's load, timed from a barrier; writes ``rank<r>.json``."""
    import torch.distributed as dist

    from s3_checkpoint_io import S3CheckpointIO
    from support.ranks import init_process_group

    init_process_group(timeout_s=600)
    rank = int(os.environ["RANK"])
    plugin = S3CheckpointIO(
        url.rsplit("/", 1)[0],
        endpoint_url=endpoint_url,
        chunk_size_MB=CHUNK_MIB,
        read_once_per_node=read_once == "1",
    )
    dist.barrier()
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    with plugin.every_rank_loads():
        loaded = plugin.load_checkpoint(url, weights_only=True)
    seconds = time.perf_counter() - started
    assert loaded["step"] == 7
    result = {
        "rank": rank,
        "seconds": seconds,
        "load_peak_mib": (_status_kib("VmHWM") - before) / 1024,
    }
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def _status_kib(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _requests(proxy: object, operation: str) -> int:
    return sum(
        1
        for r in proxy.requests  # type: ignore[attr-defined]
        if r.operation == operation and urllib.parse.unquote(r.path).endswith("/run/last.ckpt")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(BENCH)]
    import torch

    import resume_once
    from support.fault_proxy import FaultProxy
    from support.ranks import launch
    from support.s3_server import MotoServer, s3_environment

    server = MotoServer().start()
    os.environ.update(s3_environment(server.endpoint_url))
    try:
        client = server.client()
        client.create_bucket(Bucket="bench")
        buffer = io.BytesIO()
        torch.save({"weights": torch.zeros(args.size_mib * 2**18), "step": 7}, buffer)
        client.put_object(Bucket="bench", Key="run/last.ckpt", Body=buffer.getvalue())
        url = "s3://bench/run/last.ckpt"
        print(f"checkpoint: {len(buffer.getvalue()) / 2**20:.1f} MiB, ranged GETs of {CHUNK_MIB} MiB\n")
        size_mib = len(buffer.getvalue()) / 2**20
        print(
            "| ranks | loads | downloads | GET requests | MiB fetched | resume s (slowest rank) "
            "| load peak/rank MiB |"
        )
        print("|---|---|---|---|---|---|---|")
        for ranks in args.ranks:
            for read_once in ("0", "1"):
                times, heads, gets, peaks = [], [], [], []
                for _ in range(args.repeat):
                    with tempfile.TemporaryDirectory() as out, FaultProxy(server.endpoint_url) as proxy:
                        launch(resume_once.rank_load, ranks, [url, proxy.url, read_once, out], timeout_s=600)
                        results = [json.loads(p.read_text()) for p in pathlib.Path(out).glob("rank*.json")]
                        heads.append(_requests(proxy, "HeadObject"))
                        gets.append(_requests(proxy, "GetObject"))
                    times.append(max(r["seconds"] for r in results))
                    peaks.append(max(r["load_peak_mib"] for r in results))
                mode = "once per node" if read_once == "1" else "every rank (before)"
                print(
                    f"| {ranks} | {mode} | {statistics.median(heads):.0f} | {statistics.median(gets):.0f} | "
                    f"{statistics.median(heads) * size_mib:.0f} | {statistics.median(times):.2f} "
                    f"({', '.join(f'{t:.2f}' for t in times)}) | {max(peaks):.0f} |",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
