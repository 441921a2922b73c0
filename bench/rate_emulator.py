"""The request-rate emulator in front of SeaweedFS, for ``./bench/run --scale``.

``tests/support/request_rates.py`` (the emulator the tests use) run as its own process: a proxy that
answers ``503 SlowDown`` past S3's per-prefix request rates, scaled down so that a few ranks on one box
reach them. ``emulator_proxy`` starts it; ``reset`` and ``stats`` are what a runner's rank 0 calls
around each timed phase (stdlib only: the runners import this from the peers' venvs).
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = ROOT / "tests" / "support" / "request_rates.py"
STATS_PATH = "/__rates__/stats"
RESET_PATH = "/__rates__/reset"


@contextlib.contextmanager
def emulator_proxy(
    python: pathlib.Path,
    upstream: str,
    put_per_s: float,
    get_per_s: float,
    workdir: pathlib.Path,
    split_after_s: float | None = None,
) -> Iterator[str]:
    """Start the emulator's CLI proxy in front of ``upstream``; yield its endpoint URL; stop it on exit.

    Args:
        python: a python that can import ``s3_utils`` (the emulator reads S3's limits from it).
        upstream: the S3 server's endpoint.
        put_per_s: PUT-class requests per second allowed per prefix partition.
        get_per_s: GET-class requests per second allowed per prefix partition.
        workdir: where its port file and log go.
        split_after_s: None: every key prefix is a partition of its own; a number: each bucket starts
            as one partition and a prefix busy this long is split off (as S3 does, scaled down).
    """
    port_file = workdir / "rate-emulator.port"
    log_path = workdir / "rate-emulator.log"
    command = [str(python), str(CLI), "--upstream", upstream, "--port-file", str(port_file)]
    command += ["--put-per-s", f"{put_per_s:g}", "--get-per-s", f"{get_per_s:g}"]
    if split_after_s is not None:
        command += ["--split-after-s", f"{split_after_s:g}"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the request-rate emulator did not start; see {log_path}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def reset(url: str) -> None:
    """Zero the emulator's counts and forget its buckets and splits (a new phase starts from rest)."""
    request = urllib.request.Request(url + RESET_PATH, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def stats(url: str) -> dict[str, Any]:
    """The emulator's counts since the last ``reset``: ``requests`` and ``throttled`` per operation,
    ``get_body_bytes``, ``classes`` (admitted and throttled per rate class) and ``rates``."""
    with urllib.request.urlopen(url + STATS_PATH, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result
