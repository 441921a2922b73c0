"""Measure one DCP (sharded) peer at one rank count; run by the peer's own venv python.

``python dcp_runner.py '<json config>'`` with keys: peer, ranks, size_bytes (the whole state, split
evenly over the ranks), reps, bucket, metrics_url, chunk_size_MB, write_concurrency, read_concurrency,
dist_port, tag, out (a file for the JSON). Endpoint and credentials come from the environment.

The runner starts ``ranks`` gloo CPU processes (this file again, in rank mode). Each rank holds its own
tensors; a save or load is timed on rank 0 from a barrier before it to a barrier after it, so the
time is the aggregate one. CPU seconds are summed over the ranks. Requests per save come from
SeaweedFS's metrics. Every peer runs with its own defaults (threads per rank, part sizes) except ours,
which takes chunk_size_MB and the concurrencies. After the timed repetitions one more load goes
through a small counting proxy to count the GETs of the metadata object.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MiB = 1 << 20
TENSOR_BYTES = 16 * MiB
METADATA = ".metadata"


# ---------------------------------------------------------------- the peers' writers and readers


def _ours(cfg: dict[str, Any], url: str, endpoint: str) -> tuple[Any, Any]:
    from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter

    common: dict[str, Any] = {"chunk_size_MB": cfg["chunk_size_MB"], "endpoint_url": endpoint}
    if cfg.get("put_per_s"):  # the request-rate emulator's limits, which our writer paces to
        from s3_utils import S3ClientConfig

        rates = {
            "put_requests_per_prefix_per_s": cfg["put_per_s"],
            "get_requests_per_prefix_per_s": cfg["get_per_s"],
        }
        common = {
            "chunk_size_MB": cfg["chunk_size_MB"],
            "client_config": S3ClientConfig.from_env(endpoint_url=endpoint, **rates),
        }
    layout = cfg.get("key_prefix_strategy", "flat")
    return (
        S3StorageWriter(url, max_concurrency=cfg["write_concurrency"], key_prefix_strategy=layout, **common),
        S3StorageReader(url, max_concurrency=cfg["read_concurrency"], **common),
    )


def _s3torch(cfg: dict[str, Any], url: str, endpoint: str) -> tuple[Any, Any]:
    from s3torchconnector import S3ClientConfig
    from s3torchconnector._s3client import S3Client
    from s3torchconnector.dcp import S3StorageReader, S3StorageWriter
    from s3torchconnector.dcp.s3_file_system import S3FileSystem

    region, config = os.environ["AWS_REGION"], S3ClientConfig(force_path_style=True)
    writer = S3StorageWriter(region, url, s3client_config=config, overwrite=True)
    reader = S3StorageReader(region, url, s3client_config=config)
    for side in (writer, reader):  # their constructors take no endpoint: give them a client that has one
        client = S3Client(region, endpoint=endpoint, s3client_config=config)
        side.fs = S3FileSystem(
            region, s3_client=client, reader_constructor=getattr(side, "_reader_constructor", None)
        )
        side.path = side.fs.init_path(url)
    return writer, reader


def _fsspec(cfg: dict[str, Any], url: str, endpoint: str) -> tuple[Any, Any]:
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter

    # the endpoint as a storage option: fsspec caches file systems by their arguments
    return FsspecWriter(url, overwrite=True, endpoint_url=endpoint), FsspecReader(url, endpoint_url=endpoint)


def _msc(cfg: dict[str, Any], url: str, endpoint: str) -> tuple[Any, Any]:
    from multistorageclient.contrib.torch.filesystem import (
        MultiStorageFileSystemReader,
        MultiStorageFileSystemWriter,
    )

    profile = "bench" if endpoint == os.environ["AWS_ENDPOINT_URL"] else "bench-proxy"
    path = url.replace(f"s3://{cfg['bucket']}/", f"msc://{profile}/", 1)
    return (
        MultiStorageFileSystemWriter(path),
        MultiStorageFileSystemReader(path),
    )


PEERS = {"ours-dcp": _ours, "s3torch-dcp": _s3torch, "fsspec-s3fs-dcp": _fsspec, "msc-dcp": _msc}


def msc_config(bucket: str, endpoint: str, proxy: str) -> dict[str, Any]:
    """An MSC config of two profiles for ``bucket``: ``bench`` (``endpoint``), ``bench-proxy`` (``proxy``)."""
    return {"profiles": {"bench": _msc_profile(bucket, endpoint), "bench-proxy": _msc_profile(bucket, proxy)}}


def _msc_profile(bucket: str, endpoint: str) -> dict[str, Any]:
    return {
        "storage_provider": {
            "type": "s3",
            "options": {
                "base_path": bucket,
                "endpoint_url": endpoint,
                "region_name": os.environ["AWS_REGION"],
            },
        },
        "credentials_provider": {
            "type": "S3Credentials",
            "options": {
                "access_key": os.environ["AWS_ACCESS_KEY_ID"],
                "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            },
        },
    }


# ---------------------------------------------------------------- one rank


def rank_state(rank: int, ranks: int, size_bytes: int) -> dict[str, Any]:
    """This rank's share of the state: ``size_bytes / ranks`` of random float32 in tensors of 16 MiB."""
    import torch

    gen = torch.Generator().manual_seed(1000 + rank)
    left, i, state = size_bytes // ranks, 0, {}
    while left > 0:
        n = min(TENSOR_BYTES, left) // 4
        state[f"rank{rank}.layer{i}"] = torch.randn(n, generator=gen)
        left -= n * 4
        i += 1
    return state


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rank_main(cfg: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    dist.init_process_group("gloo")
    rank, ranks = dist.get_rank(), dist.get_world_size()
    state = rank_state(rank, ranks, cfg["size_bytes"])
    make = PEERS[cfg["peer"]]
    reps = []
    for rep in range(cfg["reps"] + 1):  # the first one warms up and is not kept
        url = f"s3://{cfg['bucket']}/dcp/{cfg['tag']}-rep{rep}"
        writer, reader = make(cfg, url, os.environ["AWS_ENDPOINT_URL"])
        counted = _requests(cfg, rank)
        dist.barrier()
        cpu0, t0 = cpu_now(), time.perf_counter()
        dcp.save(state, storage_writer=writer)
        dist.barrier()
        save_s, save_cpu = time.perf_counter() - t0, cpu_now() - cpu0
        save_requests = _requests(cfg, rank) - counted
        loaded = {key: torch.empty_like(value) for key, value in state.items()}
        counted = _requests(cfg, rank)
        dist.barrier()
        cpu0, t0 = cpu_now(), time.perf_counter()
        dcp.load(loaded, storage_reader=reader)
        dist.barrier()
        load_s, load_cpu = time.perf_counter() - t0, cpu_now() - cpu0
        load_requests = _requests(cfg, rank) - counted
        if not all(torch.equal(loaded[key], state[key]) for key in state):
            raise RuntimeError(f"{cfg['peer']}: rank {rank} loaded other bytes than it saved")
        cpus: list[Any] = [None] * ranks
        dist.all_gather_object(cpus, (save_cpu, load_cpu))
        if rep:
            reps.append(
                {
                    "save_s": save_s,
                    "load_s": load_s,
                    "save_cpu_s": sum(c[0] for c in cpus),
                    "load_cpu_s": sum(c[1] for c in cpus),
                    "save_requests": save_requests,
                    "load_requests": load_requests,
                    "url": url,
                }
            )
    # one more load, through the counting proxy, to count the metadata GETs
    url = reps[-1]["url"] if reps else f"s3://{cfg['bucket']}/dcp/{cfg['tag']}-rep0"
    _, reader = make(cfg, url, cfg["proxy_url"])
    loaded = {key: torch.empty_like(value) for key, value in state.items()}
    dist.barrier()
    dcp.load(loaded, storage_reader=reader)
    dist.barrier()
    stalls = async_stalls(cfg, state) if cfg["peer"] in ASYNC_STAGERS else None
    everyone: list[Any] = [None] * ranks
    dist.all_gather_object(everyone, stalls)
    if rank == 0:
        with open(cfg["out"] + ".rank0", "w") as out:
            json.dump({"reps": reps, "async": everyone if stalls else None}, out)
    dist.destroy_process_group()


def _our_stager() -> Any:
    from s3_checkpoint_io.dcp import S3AsyncStager

    return S3AsyncStager()


ASYNC_STAGERS: dict[str, Any] = {"ours-dcp": _our_stager, "s3torch-dcp": lambda: None}  # None: DCP's own


def async_stalls(cfg: dict[str, Any], state: dict[str, Any]) -> dict[str, float]:
    """How long ``dcp.async_save`` blocks this rank, against a bare clone of its shard (best of 3, all
    ranks cloning at once: on a host with fewer cores than ranks a lone clone would be faster).

    Three async saves to one prefix, each awaited before the next; the stall is the median of the last
    two (a stager that keeps its buffers, as ours does, pays their first allocation only once).
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    clone_s = float("inf")
    for _ in range(3):
        dist.barrier()  # every rank clones at once, as every rank stages at once
        t0 = time.perf_counter()
        copy = {key: value.clone() for key, value in state.items()}
        clone_s = min(clone_s, time.perf_counter() - t0)
        del copy
    stager = ASYNC_STAGERS[cfg["peer"]]()
    url = f"s3://{cfg['bucket']}/dcp/{cfg['tag']}-async"
    stalls = []
    for _ in range(3):
        writer, _ = PEERS[cfg["peer"]](cfg, url, os.environ["AWS_ENDPOINT_URL"])
        dist.barrier()
        t0 = time.perf_counter()
        future = dcp.async_save(state, storage_writer=writer, async_stager=stager)
        stalls.append(time.perf_counter() - t0)
        getattr(future, "upload_completion", future).result()
    if stager is not None:
        stager.close()
    return {"stall_s": statistics.median(stalls[1:]), "clone_s": clone_s}


def _requests(cfg: dict[str, Any], rank: int) -> int:
    """All requests the server has counted on the bucket so far (read on rank 0 only)."""
    return sum(requests_so_far(cfg["metrics_url"], cfg["bucket"]).values()) if rank == 0 else 0


# ---------------------------------------------------------------- the counting proxy


class CountingProxy:
    """A small reverse proxy on 127.0.0.1 that counts requests by method and GETs of ``.metadata``."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        counts: dict[str, int] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    counts[self.command] = counts.get(self.command, 0) + 1
                    if self.command == "GET" and urllib.parse.urlsplit(self.path).path.endswith(
                        "/" + METADATA
                    ):
                        counts["metadata_get"] = counts.get("metadata_get", 0) + 1
                upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = upstream_conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                # a HEAD's answer keeps the object's Content-Length; other answers carry the body read
                dropped = ("transfer-encoding", "connection") + (
                    () if self.command == "HEAD" else ("content-length",)
                )
                for key, value in response.getheaders():
                    if key.lower() not in dropped:
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream_conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.counts = counts
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the parent


def requests_so_far(metrics_url: str, bucket: str) -> dict[str, int]:
    """SeaweedFS's request counters of ``bucket``, by type (GET, PUT, ...)."""
    import re
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(
        r'^SeaweedFS_s3_request_total\{bucket="' + re.escape(bucket) + r'",[^}]*type="([A-Z]+)"\}\s+(\S+)$',
        re.M,
    )
    totals: dict[str, int] = {}
    for kind, value in pattern.findall(text):
        totals[kind] = totals.get(kind, 0) + int(float(value))
    return totals


def launch_ranks(script: str, cfg: dict[str, Any], env: dict[str, str], timeout_s: float = 1200) -> None:
    """Run ``script`` once per rank (``cfg["ranks"]`` gloo CPU processes on this host, ``rank_mode`` set
    in their config, RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE in their environment) and wait
    for all of them. Rank r's output goes to ``<out>.rank<r>.log``: to a file, not a pipe, so no rank
    blocks on a full pipe while another one is waited for.

    Raises:
        RuntimeError: a rank exited non-zero; the message ends with its output.
    """
    ranks = cfg["ranks"]
    log_paths = [f"{cfg['out']}.rank{rank}.log" for rank in range(ranks)]
    with contextlib.ExitStack() as stack:
        children = []
        for rank, log_path in enumerate(log_paths):
            rank_env = dict(
                env, RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks)
            )
            log = stack.enter_context(open(log_path, "w"))
            command = [sys.executable, script, json.dumps({**cfg, "rank_mode": True})]
            children.append(subprocess.Popen(command, env=rank_env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        try:
            for child in children:
                child.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    failed = next((rank for rank, child in enumerate(children) if child.returncode), None)
    if failed is not None:
        with open(log_paths[failed]) as log:
            output = log.read()[-3000:]
        raise RuntimeError(f"rank {failed} exited {children[failed].returncode}: {output}")


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("rank_mode"):
        rank_main(cfg)
        return
    result: dict[str, Any] = {"peer": cfg["peer"], "ranks": cfg["ranks"], "size_bytes": cfg["size_bytes"]}
    proxy = CountingProxy(os.environ["AWS_ENDPOINT_URL"])
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["dist_port"]))
    if cfg["peer"] == "msc-dcp":  # MSC reads its endpoints from a config file
        config_path = cfg["out"] + ".msc.json"
        with open(config_path, "w") as out:
            json.dump(msc_config(cfg["bucket"], os.environ["AWS_ENDPOINT_URL"], proxy.url), out)
        env["MSC_CONFIG"] = config_path
    try:
        launch_ranks(__file__, {**cfg, "proxy_url": proxy.url}, env)
        with open(cfg["out"] + ".rank0") as rank0:
            rank0_result = json.load(rank0)
        result["reps"], result["async"] = rank0_result["reps"], rank0_result["async"]
        result["proxy_counts"] = dict(proxy.counts)
        result["metadata_gets_per_load"] = proxy.counts.get("metadata_get", 0)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        proxy.close()
    with open(cfg["out"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
