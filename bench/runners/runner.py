"""Measure one peer at one state-dict size; run by the peer's own venv python, prints one JSON object.

``python runner.py '<json config>'`` with keys: peer, endpoint, bucket, size_bytes, reps, metrics_url,
train (measure steps/s during an async save, unpinned and pinned), server_pid (the S3 server, pinned
to CPU 1 with every helper in the pinned pass), chunk_size_MB, concurrency, out (a file for the JSON).
Credentials and endpoint come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), set by
the orchestrator. Only the imports of the chosen peer are loaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import torch

MiB = 1 << 20
TENSOR_BYTES = 16 * MiB
TRAINING_SAMPLES = 3
"""Idle-then-saving samples per training measurement: one sample's busy / idle ratio moved 78 to 109 %
from run to run of the same commit (a 2 s idle window and one save on a shared 2-core host)."""


# ---------------------------------------------------------------- measurement helpers


def cpu_seconds() -> float:
    """CPU time of this process and of its children, live or reaped (NeMo's async saver is a child)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        live += times.user + times.system
    return me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime + live


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _shm_used() -> int:
    """Bytes used in /dev/shm: NeMo serializes checkpoints there, RAM that no process's RSS shows."""
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


class PeakRss:
    """Peak memory over a block: this process (exact, VmHWM), plus its children and /dev/shm (sampled
    every 20 ms), each over its level when the block began."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._kids_peak = self._kids_base = 0
        self._shm_peak = self._shm_base = 0
        self.base = self.extra = 0
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    @staticmethod
    def _children_rss() -> int:
        try:
            return sum(c.memory_info().rss for c in psutil.Process().children(recursive=True))
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._kids_peak = max(self._kids_peak, self._children_rss())
            self._shm_peak = max(self._shm_peak, _shm_used())

    def __enter__(self) -> PeakRss:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        self.base = _status_kib("VmRSS") * 1024
        self._kids_base = self._kids_peak = self._children_rss()
        self._shm_base = self._shm_peak = _shm_used()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.extra = (
            _status_kib("VmHWM") * 1024
            - self.base
            + self._kids_peak
            - self._kids_base
            + self._shm_peak
            - self._shm_base
        )


def requests_so_far(metrics_url: str, bucket: str) -> int:
    import re
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(
        r'^SeaweedFS_s3_request_total\{bucket="' + re.escape(bucket) + r'",[^}]*\}\s+(\S+)$', re.M
    )
    return sum(int(float(v)) for v in pattern.findall(text))


def make_checkpoint(size_bytes: int) -> dict[str, Any]:
    """A Lightning-shaped checkpoint whose tensors hold ``size_bytes`` of random float32 data."""
    gen = torch.Generator().manual_seed(1234)
    tensors: dict[str, torch.Tensor] = {}
    left, i = size_bytes, 0
    per = min(TENSOR_BYTES, max(4, size_bytes // 4))
    while left > 0:
        n = min(per, left) // 4
        tensors[f"layer{i}.weight"] = torch.randn(n, generator=gen)
        left -= n * 4
        i += 1
    return {
        "state_dict": tensors,
        "epoch": 0,
        "global_step": 1,
        "optimizer_states": [],
        "lr_schedulers": [],
        "pytorch-lightning_version": "bench",
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    sa, sb = a["state_dict"], b["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- peers


@dataclass
class Peer:
    """make() builds the checkpoint IO, used for every save and load of one runner: save(ckpt, url),
    load(url), finish() (waits until saves are durable) and close()."""

    make: Callable[[dict[str, Any]], Any]
    is_async: bool = False


class CheckpointIOAdapter:
    def __init__(self, checkpoint_io: Any) -> None:
        self.io = checkpoint_io

    def save(self, ckpt: dict[str, Any], url: str) -> None:
        self.io.save_checkpoint(ckpt, url)

    def save_again(self, ckpt: dict[str, Any], saved_url: str, url: str) -> None:
        """Save the state just saved at ``saved_url`` under a second name (Lightning's last beside its
        top-k): ours as S3ModelCheckpoint does it, a server-side copy once the first is durable."""
        if hasattr(self.io, "copy_checkpoint"):
            self.io.copy_checkpoint(saved_url, url)
        else:
            self.io.save_checkpoint(ckpt, url)

    def load(self, url: str) -> dict[str, Any]:
        return dict(self.io.load_checkpoint(url))

    def finish(self) -> None:
        """Wait until every save so far is durable, keeping the IO usable (as between training saves)."""
        if hasattr(self.io, "wait_for_saves"):  # ours
            self.io.wait_for_saves()
        elif getattr(self.io, "_futures", None) is not None:  # NeMo async: its teardown is final
            for future, *_ in self.io._futures:
                future.result()
        elif hasattr(self.io, "_executor"):  # Lightning's AsyncCheckpointIO re-creates its executor
            self.io.teardown()

    def close(self) -> None:
        self.io.teardown()


def _seed_arguments(cfg: dict[str, Any], async_checkpointing: bool) -> dict[str, Any]:
    """The NeMo seed's S3CheckpointIO arguments, which ours and NeMo's both take."""
    return {
        "dirpath": f"s3://{cfg['bucket']}/ckpt",
        "chunk_size_MB": cfg["chunk_size_MB"],
        "max_read_concurrency": cfg["read_concurrency"],
        "max_write_concurrency": cfg["write_concurrency"],
        "async_checkpointing": async_checkpointing,
    }


def _ours(cfg: dict[str, Any], async_checkpointing: bool, **settings: Any) -> Any:
    from s3_checkpoint_io import S3CheckpointIO

    return CheckpointIOAdapter(S3CheckpointIO(**_seed_arguments(cfg, async_checkpointing), **settings))


def _nemo(cfg: dict[str, Any], async_checkpointing: bool) -> Any:
    import torch.distributed as dist
    from nemo.utils.callbacks.s3_checkpoint_io import S3CheckpointIO

    if not dist.is_initialized():  # NeMo's saver logs its rank
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(cfg["dist_port"]))
        dist.init_process_group("gloo", rank=0, world_size=1)
    return CheckpointIOAdapter(S3CheckpointIO(**_seed_arguments(cfg, async_checkpointing)))


def _s3torch(cfg: dict[str, Any], async_checkpointing: bool = False) -> Any:
    """s3torchconnector's Lightning checkpoint IO; async as a Lightning user makes it, in Lightning's
    ``AsyncCheckpointIO`` (one background thread in the trainer's process)."""
    from lightning.pytorch.plugins.io import AsyncCheckpointIO
    from s3torchconnector import S3ClientConfig
    from s3torchconnector.lightning import S3LightningCheckpoint

    plain = S3LightningCheckpoint(
        os.environ["AWS_REGION"],
        s3client_config=S3ClientConfig(force_path_style=True),
        endpoint=os.environ["AWS_ENDPOINT_URL"],
    )
    return CheckpointIOAdapter(AsyncCheckpointIO(plain) if async_checkpointing else plain)


def _lightning_s3fs(cfg: dict[str, Any], async_checkpointing: bool) -> Any:
    from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

    plain = TorchCheckpointIO()
    return CheckpointIOAdapter(AsyncCheckpointIO(plain) if async_checkpointing else plain)


class BytesTransfer:
    """A transfer-level peer: moves the checkpoint's bytes, serialized beforehand (not timed)."""

    def __init__(self) -> None:
        self.payload = b""

    def prepare(self, ckpt: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        self.payload = buf.getvalue()

    def save(self, ckpt: dict[str, Any], url: str) -> None:
        self.put(url)

    def load(self, url: str) -> dict[str, Any]:
        got = self.get(url)
        if got != len(self.payload):
            raise RuntimeError(f"downloaded {got} bytes, uploaded {len(self.payload)}")
        return {}

    def put(self, url: str) -> None:
        raise NotImplementedError

    def get(self, url: str) -> int:
        """Download ``url``; returns how many bytes arrived."""
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


class RawBoto3(BytesTransfer):
    """The transfer limit: boto3's transfer manager moving bytes already serialized (not timed)."""

    def __init__(self, cfg: dict[str, Any], crt: bool) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from botocore.config import Config

        super().__init__()
        self.client = boto3.client("s3", config=Config(max_pool_connections=max(10, cfg["read_concurrency"])))
        self.transfer_write = TransferConfig(
            multipart_chunksize=cfg["chunk_size_MB"] * MiB,
            max_concurrency=cfg["write_concurrency"],
            preferred_transfer_client="crt" if crt else "classic",
        )
        self.transfer_read = TransferConfig(
            multipart_chunksize=cfg["chunk_size_MB"] * MiB,
            max_concurrency=cfg["read_concurrency"],
            preferred_transfer_client="crt" if crt else "classic",
        )
        self.crt = crt
        if crt:
            manager = create_transfer_manager(self.client, self.transfer_write)
            if type(manager).__name__ != "CRTTransferManager":
                raise RuntimeError(f"boto3 gave {type(manager).__name__}, not the CRT transfer manager")
            self.manager = manager

    def put(self, url: str) -> None:
        bucket, key = url[5:].split("/", 1)
        if self.crt:
            self.manager.upload(io.BytesIO(self.payload), bucket, key).result()
        else:
            self.client.upload_fileobj(io.BytesIO(self.payload), bucket, key, Config=self.transfer_write)

    def get(self, url: str) -> int:
        bucket, key = url[5:].split("/", 1)
        out = io.BytesIO()
        if self.crt:
            self.manager.download(bucket, key, out).result()
        else:
            self.client.download_fileobj(bucket, key, out, Config=self.transfer_read)
        return out.getbuffer().nbytes

    def close(self) -> None:
        if self.crt:
            self.manager.shutdown()


class OursTransfer(BytesTransfer):
    """s3_utils.S3Store moving the same pre-serialized bytes (the layer S3CheckpointIO streams through)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from s3_utils import S3ClientConfig, S3Store, TransferConfig

        super().__init__()
        client = S3ClientConfig.from_env()
        size = cfg["chunk_size_MB"]
        self.writes = S3Store(
            client, TransferConfig(chunk_size_MB=size, max_concurrency=cfg["write_concurrency"])
        )
        self.reads = S3Store(
            client, TransferConfig(chunk_size_MB=size, max_concurrency=cfg["read_concurrency"])
        )

    def put(self, url: str) -> None:
        self.writes.upload_bytes(url, self.payload)

    def get(self, url: str) -> int:
        return len(self.reads.download_bytes(url))

    def close(self) -> None:
        self.writes.close()
        self.reads.close()


class NemoS3Utils(BytesTransfer):
    """NeMo 3.0.0's S3Utils moving the same pre-serialized bytes (what its S3CheckpointIO calls)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from nemo.utils.s3_utils import S3Utils

        super().__init__()
        self.utils = S3Utils
        self.cfg = cfg

    def put(self, url: str) -> None:
        self.utils.upload_file_stream_to_s3(
            io.BytesIO(self.payload), url, self.cfg["chunk_size_MB"], self.cfg["write_concurrency"]
        )

    def get(self, url: str) -> int:
        stream = self.utils.download_s3_file_to_stream(
            url, self.cfg["chunk_size_MB"], self.cfg["read_concurrency"]
        )
        return int(stream.getbuffer().nbytes)


def _crt_result(request: Any) -> None:
    """Wait for an awscrt S3 request; raise its HTTP status and body, which awscrt's message omits."""
    try:
        request.finished_future.result()
    except Exception as exc:
        status, body = getattr(exc, "status_code", None), getattr(exc, "body", None) or b""
        raise RuntimeError(f"{exc} (HTTP {status}: {bytes(body)[:300]!r})") from exc


class CrtTransfer(BytesTransfer):
    """awscrt's native S3 client (the engine under boto3[crt] and s3torchconnector's C/Rust stack)
    moving the same pre-serialized bytes: C threads, C checksums, part scheduling and retries its own.
    Uploads send a CRC64NVME trailer; downloads HEAD first, then write each body piece at its offset."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import urllib.parse

        from awscrt.auth import AwsCredentialsProvider
        from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
        from awscrt.s3 import S3Client, S3RequestTlsMode, create_default_s3_signing_config

        super().__init__()
        endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"])
        self.host = endpoint.netloc
        loops = EventLoopGroup()
        bootstrap = ClientBootstrap(loops, DefaultHostResolver(loops))
        credentials = AwsCredentialsProvider.new_static(
            os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        )
        self.client = S3Client(
            bootstrap=bootstrap,
            region=os.environ["AWS_REGION"],
            signing_config=create_default_s3_signing_config(
                region=os.environ["AWS_REGION"], credential_provider=credentials
            ),
            tls_mode=S3RequestTlsMode.DISABLED if endpoint.scheme == "http" else S3RequestTlsMode.ENABLED,
            part_size=cfg["chunk_size_MB"] * MiB,
            throughput_target_gbps=10.0,
        )

    def _request(self, method: str, url: str, body: Any = None, length: int | None = None) -> Any:
        from awscrt.http import HttpHeaders, HttpRequest

        bucket, key = url[5:].split("/", 1)
        headers = HttpHeaders([("Host", self.host)])
        if length is not None:
            headers.add("Content-Length", str(length))
            headers.add("Content-Type", "application/octet-stream")
        return HttpRequest(method, f"/{bucket}/{key}", headers, body)

    def put(self, url: str) -> None:
        from awscrt.s3 import S3ChecksumAlgorithm, S3ChecksumConfig, S3ChecksumLocation, S3RequestType

        request = self._request("PUT", url, io.BytesIO(self.payload), len(self.payload))
        checksum = S3ChecksumConfig(
            algorithm=S3ChecksumAlgorithm.CRC64NVME, location=S3ChecksumLocation.TRAILER
        )
        _crt_result(
            self.client.make_request(type=S3RequestType.PUT_OBJECT, request=request, checksum_config=checksum)
        )

    def get(self, url: str) -> int:
        from awscrt.s3 import S3RequestType

        sizes: list[int] = []

        def on_headers(status_code: int, headers: list[tuple[str, str]], **kwargs: Any) -> None:
            for name, value in headers:
                if name.lower() == "content-length" and not sizes:
                    sizes.append(int(value))

        _crt_result(
            self.client.make_request(
                type=S3RequestType.DEFAULT,
                operation_name="HeadObject",
                request=self._request("HEAD", url),
                on_headers=on_headers,
            )
        )
        target = bytearray(sizes[0])
        view = memoryview(target)

        def on_body(chunk: Any, offset: int, **kwargs: Any) -> None:
            view[offset : offset + len(chunk)] = chunk

        _crt_result(
            self.client.make_request(
                type=S3RequestType.GET_OBJECT, request=self._request("GET", url), on_body=on_body
            )
        )
        return len(target)


PEERS: dict[str, Peer] = {
    "ours-sync": Peer(lambda c: _ours(c, False)),
    "ours-async": Peer(lambda c: _ours(c, True), is_async=True),
    # the upload helper at the trainer's own priority, to compare with the default in one run
    "ours-async-nice0": Peer(lambda c: _ours(c, True, upload_process_nice=0), is_async=True),
    "nemo-sync": Peer(lambda c: _nemo(c, False)),
    "nemo-async": Peer(lambda c: _nemo(c, True), is_async=True),
    "s3torchconnector": Peer(_s3torch),
    "s3torchconnector-async": Peer(lambda c: _s3torch(c, True), is_async=True),
    "lightning-s3fs": Peer(lambda c: _lightning_s3fs(c, False)),
    "lightning-s3fs-async": Peer(lambda c: _lightning_s3fs(c, True), is_async=True),
    "raw-boto3": Peer(lambda c: RawBoto3(c, crt=False)),
    "raw-boto3-crt": Peer(lambda c: RawBoto3(c, crt=True)),
    "crt-transfer": Peer(CrtTransfer),
    "ours-transfer": Peer(OursTransfer),
    "nemo-s3utils": Peer(NemoS3Utils),
}


# ---------------------------------------------------------------- the measurements


def warm_up(saver: Any, cfg: dict[str, Any], ckpt: dict[str, Any]) -> None:
    """One untimed save and load of the checkpoint: imports, clients, buffers and first-call costs,
    as in training, where the checkpoint IO lives across saves."""
    url = f"s3://{cfg['bucket']}/ckpt/{cfg['tag']}-warmup.ckpt"
    if isinstance(saver, BytesTransfer):
        saver.prepare(ckpt)
    saver.save(ckpt, url)
    saver.finish()
    saver.load(url)


def memory_now() -> int:
    """PSS of this process and its children, plus /dev/shm in use.

    PSS, not RSS: a page mapped by the trainer and a helper process (a shared-memory snapshot, the
    torch library) counts once across them, where summed RSS counts it in each (ours' 512 MiB async
    snapshot showed 1325 MiB held by RSS, 740 MiB by PSS). A lone process's PSS is its RSS.
    """
    try:
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        return sum(process.memory_full_info().pss for process in processes) + _shm_used()
    except psutil.Error:
        return _status_kib("VmRSS") * 1024 + PeakRss._children_rss() + _shm_used()


def measure_transfers(
    saver: Any, cfg: dict[str, Any], ckpt: dict[str, Any], result: dict[str, Any]
) -> list[dict[str, Any]]:
    warm_up(saver, cfg, ckpt)
    # what the checkpoint IO keeps between saves (buffers, pools, a child process), over its creation
    result["held_after_warmup"] = memory_now() - result["memory_before_io"]
    reps: list[dict[str, Any]] = []
    for rep in range(cfg["reps"]):
        url = f"s3://{cfg['bucket']}/ckpt/{cfg['tag']}-rep{rep}.ckpt"
        before = requests_so_far(cfg["metrics_url"], cfg["bucket"])
        cpu0 = cpu_seconds()
        with PeakRss() as save_rss:
            t0 = time.perf_counter()
            saver.save(ckpt, url)
            stall = time.perf_counter() - t0
            saver.finish()  # async peers: waits for the upload; sync peers: releases resources
            save_s = time.perf_counter() - t0
        save_cpu = cpu_seconds() - cpu0
        save_requests = requests_so_far(cfg["metrics_url"], cfg["bucket"]) - before

        loader = saver
        cpu0 = cpu_seconds()
        with PeakRss() as load_rss:
            t0 = time.perf_counter()
            loaded = loader.load(url)
            load_s = time.perf_counter() - t0
        load_cpu = cpu_seconds() - cpu0
        if not isinstance(loader, BytesTransfer) and not same(ckpt, loaded):
            raise RuntimeError(f"{cfg['peer']}: the loaded checkpoint differs from the saved one")
        del loaded
        reps.append(
            {
                "save_s": save_s,
                "stall_s": stall,
                "save_cpu_s": save_cpu,
                "save_rss_extra": save_rss.extra,
                "save_requests": save_requests,
                "load_s": load_s,
                "load_cpu_s": load_cpu,
                "load_rss_extra": load_rss.extra,
            }
        )
    return reps


def requests_per_step(saver: Any, cfg: dict[str, Any], ckpt: dict[str, Any]) -> int:
    """Requests for one training step that saves both a top-k and the last checkpoint (Lightning's
    ``save_top_k`` with ``save_last``: the same state to two names), until both are durable."""
    before = requests_so_far(cfg["metrics_url"], cfg["bucket"])
    top_k = f"s3://{cfg['bucket']}/ckpt/{cfg['tag']}-step=1.ckpt"
    last = f"s3://{cfg['bucket']}/ckpt/{cfg['tag']}-last.ckpt"
    saver.save(ckpt, top_k)
    if hasattr(saver, "save_again"):
        saver.save_again(ckpt, top_k, last)
    else:
        saver.save(ckpt, last)
    saver.finish()
    return requests_so_far(cfg["metrics_url"], cfg["bucket"]) - before


def bare_clone_seconds(ckpt: dict[str, Any]) -> float:
    """The least a safe async save must block for: copying every tensor once."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        copy = {k: v.clone() for k, v in ckpt["state_dict"].items()}
        best = min(best, time.perf_counter() - t0)
        del copy
    return best


def _tasks(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _pin(pid: int, cpus: set[int], skip: int | None = None) -> None:
    """Set the CPU affinity of every thread of ``pid`` (Linux affinity is per thread)."""
    for tid in _tasks(pid):
        if tid != skip:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                os.sched_setaffinity(tid, cpus)


class Pinned:
    """The training loop (the calling thread) on CPU 0; every other thread of this process, every child
    process (a helper uploader) and the S3 server on CPU 1, re-applied every 10 ms so that threads and
    processes started during the save follow. Restores every affinity on exit."""

    TRAIN_CPU, OTHER_CPU = 0, 1

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.everything = os.sched_getaffinity(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_pinned, name="pinner", daemon=True)
        self._train_tid = threading.get_native_id()

    @staticmethod
    def possible() -> bool:
        return {Pinned.TRAIN_CPU, Pinned.OTHER_CPU} <= os.sched_getaffinity(0)

    def _others(self) -> list[int]:
        pids = [c.pid for c in psutil.Process().children(recursive=True)]
        return pids + ([self.server_pid] if self.server_pid else [])

    def _keep_pinned(self) -> None:
        os.sched_setaffinity(0, {self.OTHER_CPU})
        while True:
            _pin(os.getpid(), {self.OTHER_CPU}, skip=self._train_tid)
            for pid in self._others():
                _pin(pid, {self.OTHER_CPU})
            if self._stop.wait(0.01):
                return

    def __enter__(self) -> Pinned:
        os.sched_setaffinity(0, {self.TRAIN_CPU})
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        _pin(os.getpid(), self.everything)
        for pid in self._others():
            _pin(pid, self.everything)


def measure_training(
    saver: Any, cfg: dict[str, Any], ckpt: dict[str, Any], pinned: bool = False
) -> dict[str, Any]:
    """Steps/s of a small CPU training loop with no save in flight, then while an async save runs.

    Measured :data:`TRAINING_SAMPLES` times (each an idle rate, then one save); ``steps_ratio`` is the
    median of the samples' busy / idle rates.

    With ``pinned``, the loop runs alone on CPU 0 and everything else (upload threads, helper
    processes, the S3 server) on CPU 1: what is left of the loop's speed is what the save costs the
    trainer's interpreter (the GIL), not competition for cores.
    """
    if pinned:
        with Pinned(cfg.get("server_pid")):
            return measure_training(saver, cfg, ckpt, pinned=False)
    # One intra-op thread: the loop is one core's work. With torch's default pool (one thread per core)
    # a pinned run would leave a pool thread on the upload's CPU and time that CPU, not the GIL.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        samples = [_steps_with_and_without_a_save(saver, cfg, ckpt) for _ in range(TRAINING_SAMPLES)]
    finally:
        torch.set_num_threads(threads)
    ratios = [s["busy_steps_per_s"] / s["idle_steps_per_s"] for s in samples if s["busy_steps_per_s"]]
    return {
        "samples": samples,
        "steps_ratio": statistics.median(ratios) if ratios else None,
        "train_stall_s": statistics.median(s["train_stall_s"] for s in samples),
    }


def _steps_with_and_without_a_save(saver: Any, cfg: dict[str, Any], ckpt: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(512, 512) for _ in range(4)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 512)

    def step() -> None:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    for _ in range(20):
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        step()
        steps += 1
    idle_rate = steps / (time.perf_counter() - t0)

    url = f"s3://{cfg['bucket']}/ckpt/{cfg['tag']}-train.ckpt"
    t0 = time.perf_counter()
    saver.save(ckpt, url)
    stall = time.perf_counter() - t0
    waiter = threading.Thread(target=saver.finish, name="wait-for-save")
    waiter.start()
    steps, t1 = 0, time.perf_counter()
    while waiter.is_alive():
        step()
        steps += 1
    busy_s = time.perf_counter() - t1
    waiter.join()
    return {
        "idle_steps_per_s": idle_rate,
        "busy_steps_per_s": steps / busy_s if busy_s > 0 else None,
        "busy_steps": steps,
        "busy_s": busy_s,
        "train_stall_s": stall,
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    result: dict[str, Any] = {"peer": cfg["peer"], "size_bytes": cfg["size_bytes"], "tag": cfg["tag"]}
    result["loadavg_before"] = os.getloadavg()[0]
    try:
        peer = PEERS[cfg["peer"]]
        ckpt = make_checkpoint(cfg["size_bytes"])
        peer.make(cfg).close()  # imports loaded here are not memory the IO holds
        result["memory_before_io"] = memory_now()
        saver = peer.make(cfg)
        try:
            result["reps"] = measure_transfers(saver, cfg, ckpt, result)
            if not isinstance(saver, BytesTransfer):
                result["requests_per_step"] = requests_per_step(saver, cfg, ckpt)
            if peer.is_async:
                result["bare_clone_s"] = bare_clone_seconds(ckpt)
                if cfg.get("train"):
                    result["training"] = measure_training(saver, cfg, ckpt)
                    if Pinned.possible():
                        result["training_pinned"] = measure_training(saver, cfg, ckpt, pinned=True)
        finally:
            saver.close()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result["loadavg_after"] = os.getloadavg()[0]
    with open(cfg["out"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
