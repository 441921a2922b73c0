"""Measure one peer at one rank count through the request-rate emulator; run by the peer's venv python.

``python scale_runner.py '<json config>'`` with keys: peer (``ours`` or ``s3torch``), ranks, size_bytes
(the sharded state, split evenly over the ranks), replicated_bytes (items every rank holds alike, for
the ``dcp-replicated`` case; 0: no such case), resume_bytes (the single-file checkpoint every rank
loads), layouts (our ``key_prefix_strategy`` values to save with; s3torchconnector has one layout,
``flat``), bucket, chunk_size_MB, write_concurrency, read_concurrency, dist_port, tag, rates_url (the
emulator proxy, which is also the endpoint in the environment), put_per_s and get_per_s (the
emulator's rates, which ours paces to; None: ours keeps S3's own), resume (False: the sharded cases
only), out (a file for the JSON).

It starts ``ranks`` gloo CPU processes (this file again, in rank mode, launched as ``dcp_runner.py``
launches them), which warm up with one small untimed save and load. Each case runs as timed phases;
before each, rank 0 resets the emulator's counts and token buckets while every rank waits at a
barrier, so a phase's requests, SlowDown answers and bytes are its own. A phase is timed on rank 0
from a barrier before it to a barrier after it (the host's 1-minute load average noted before it):

- ``dcp-<layout>`` save then load: ``dcp.save`` / ``dcp.load`` of the sharded state (the load checked
  tensor by tensor against what was saved);
- ``dcp-replicated``: the same with ``replicated_bytes`` of items every rank holds alike added to
  each rank's state (flat layout);
- ``resume``: every rank loads one ``torch.save`` file, as a DDP job resuming does (ours: through
  ``S3CheckpointIO.load_checkpoint``; s3torchconnector: ``torch.load`` from its ``S3Checkpoint`` reader).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import dcp_runner

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # bench/, for rate_emulator
import rate_emulator

RESUME_TENSOR_BYTES = 16 << 20


# ---------------------------------------------------------------- the single-file resume, per peer


def resume_state(size_bytes: int) -> dict[str, Any]:
    """A Lightning-shaped checkpoint of ``size_bytes`` of random float32 and a fingerprint of its values
    (the load checks it, so every rank knows it got the saved bytes without holding a second copy)."""
    import torch

    gen = torch.Generator().manual_seed(7)
    tensors = {}
    for i in range(max(size_bytes // RESUME_TENSOR_BYTES, 1)):
        tensors[f"layer{i}.weight"] = torch.randn(min(RESUME_TENSOR_BYTES, size_bytes) // 4, generator=gen)
    fingerprint = float(sum(t.double().sum() for t in tensors.values()))
    return {"state_dict": tensors, "fingerprint": fingerprint, "global_step": 100}


def check_resumed(checkpoint: dict[str, Any], rank: int, peer: str) -> None:
    fingerprint = float(sum(t.double().sum() for t in checkpoint["state_dict"].values()))
    if fingerprint != checkpoint["fingerprint"]:
        raise RuntimeError(f"{peer}: rank {rank} resumed other bytes than were saved")


class OursResume:
    """Ours: ``S3CheckpointIO`` writes the file; every rank loads it through
    ``load_checkpoint_on_every_rank`` (once per node, the others get its bytes over gloo) where our
    packages have it, else through ``load_checkpoint`` (every rank downloads it)."""

    def __init__(self, cfg: dict[str, Any], dirpath: str) -> None:
        from s3_checkpoint_io import S3CheckpointIO

        self.io = S3CheckpointIO(
            dirpath,
            chunk_size_MB=cfg["chunk_size_MB"],
            max_read_concurrency=cfg["read_concurrency"],
            max_write_concurrency=cfg["write_concurrency"],
            endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        )

    def save(self, checkpoint: dict[str, Any], url: str) -> None:
        self.io.save_checkpoint(checkpoint, url)

    @property
    def how(self) -> str:
        """How the load reads the file: ``once per node`` or ``every rank``."""
        return "once per node" if hasattr(self.io, "load_checkpoint_on_every_rank") else "every rank"

    def load(self, url: str) -> Any:
        if hasattr(self.io, "load_checkpoint_on_every_rank"):
            return self.io.load_checkpoint_on_every_rank(url, weights_only=True)
        return self.io.load_checkpoint(url, weights_only=True)


class S3torchResume:
    """s3torchconnector: its ``S3Checkpoint`` writer and reader around ``torch.save`` / ``torch.load``."""

    def __init__(self, cfg: dict[str, Any], dirpath: str) -> None:
        from s3torchconnector import S3Checkpoint, S3ClientConfig

        self.checkpoint = S3Checkpoint(
            os.environ["AWS_REGION"],
            endpoint=os.environ["AWS_ENDPOINT_URL"],
            s3client_config=S3ClientConfig(force_path_style=True),
        )

    how = "every rank"

    def save(self, checkpoint: dict[str, Any], url: str) -> None:
        import torch

        with self.checkpoint.writer(url) as writer:
            torch.save(checkpoint, writer)

    def load(self, url: str) -> Any:
        import torch

        with self.checkpoint.reader(url) as reader:
            return torch.load(reader, weights_only=True)


RESUMERS = {"ours": OursResume, "s3torch": S3torchResume}
DCP_PEERS = {"ours": "ours-dcp", "s3torch": "s3torch-dcp"}


# ---------------------------------------------------------------- one rank


def timed_phase(
    cfg: dict[str, Any], case: str, phase: str, work: Callable[[], Any]
) -> tuple[dict[str, Any], Any]:
    """Reset the emulator (on rank 0, every rank waiting), run ``work`` on every rank between two
    barriers; return the phase's record (time, and on rank 0 the emulator's counts of it) and what
    ``work`` returned."""
    import torch.distributed as dist

    rank = dist.get_rank()
    dist.barrier()
    load_before = os.getloadavg()[0]
    if rank == 0:
        rate_emulator.reset(cfg["rates_url"])
    dist.barrier()
    started = time.perf_counter()
    value = work()
    dist.barrier()
    seconds = time.perf_counter() - started
    stats = rate_emulator.stats(cfg["rates_url"]) if rank == 0 else {}
    record = {"case": case, "phase": phase, "seconds": seconds, "stats": stats, "loadavg": load_before}
    return record, value


def warm_up(cfg: dict[str, Any]) -> None:
    """One small untimed sharded save and load, so that the first timed phase does not pay for imports,
    clients and DCP's first plan (a few requests, before the first reset)."""
    import torch
    import torch.distributed.checkpoint as dcp

    url = f"s3://{cfg['bucket']}/scale/{cfg['tag']}-warm-up"
    writer, reader = dcp_runner.PEERS[DCP_PEERS[cfg["peer"]]](cfg, url, os.environ["AWS_ENDPOINT_URL"])
    state = {"warm-up": torch.zeros(1024)}
    dcp.save(state, storage_writer=writer)
    dcp.load(state, storage_reader=reader)


def replicated_state(size_bytes: int) -> dict[str, Any]:
    """Items every rank holds alike (same keys, same values), ``size_bytes`` of them: DCP saves each
    once (on one rank) and, on a load, every rank reads them."""
    import torch

    gen = torch.Generator().manual_seed(99)
    count = max(size_bytes // RESUME_TENSOR_BYTES, 1)
    n = min(RESUME_TENSOR_BYTES, size_bytes) // 4
    return {f"replicated.layer{i}": torch.randn(n, generator=gen) for i in range(count)}


def sharded_case(cfg: dict[str, Any], case: str, layout: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """One timed ``dcp.save`` and one timed ``dcp.load`` of ``state`` with ``layout``; the load is
    checked tensor by tensor against what was saved."""
    import torch
    import torch.distributed.checkpoint as dcp

    url = f"s3://{cfg['bucket']}/scale/{cfg['tag']}-{case}"
    writer, reader = dcp_runner.PEERS[DCP_PEERS[cfg["peer"]]](
        {**cfg, "key_prefix_strategy": layout}, url, os.environ["AWS_ENDPOINT_URL"]
    )
    saved, _ = timed_phase(cfg, case, "save", functools.partial(dcp.save, state, storage_writer=writer))
    loaded = {key: torch.empty_like(value) for key, value in state.items()}
    read, _ = timed_phase(cfg, case, "load", functools.partial(dcp.load, loaded, storage_reader=reader))
    if not all(torch.equal(loaded[key], state[key]) for key in state):
        raise RuntimeError(f"{cfg['peer']}: a rank loaded other bytes than it saved ({case})")
    return [saved, read]


def rank_main(cfg: dict[str, Any]) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, ranks = dist.get_rank(), dist.get_world_size()
    phases = []
    warm_up(cfg)
    state = dcp_runner.rank_state(rank, ranks, cfg["size_bytes"])
    for layout in cfg["layouts"]:
        phases += sharded_case(cfg, f"dcp-{layout}", layout, state)
    if cfg["replicated_bytes"]:
        state.update(replicated_state(cfg["replicated_bytes"]))
        phases += sharded_case(cfg, "dcp-replicated", "flat", state)
    del state
    if not cfg.get("resume", True):
        _write_phases(cfg, rank, phases)
        dist.destroy_process_group()
        return

    dirpath = f"s3://{cfg['bucket']}/scale/{cfg['tag']}-resume"
    url = f"{dirpath}/epoch=0-step=100.ckpt"
    resumer = RESUMERS[cfg["peer"]](cfg, dirpath)
    if rank == 0:
        resumer.save(resume_state(cfg["resume_bytes"]), url)
    record, checkpoint = timed_phase(cfg, "resume", "load", functools.partial(resumer.load, url))
    phases.append({**record, "how": resumer.how})
    check_resumed(checkpoint, rank, cfg["peer"])
    _write_phases(cfg, rank, phases)
    dist.destroy_process_group()


def _write_phases(cfg: dict[str, Any], rank: int, phases: list[dict[str, Any]]) -> None:
    if rank == 0:
        with open(cfg["out"] + ".rank0", "w") as out:
            json.dump({"phases": phases}, out)


# ---------------------------------------------------------------- the parent


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("rank_mode"):
        rank_main(cfg)
        return
    result: dict[str, Any] = {"peer": cfg["peer"], "ranks": cfg["ranks"], "size_bytes": cfg["size_bytes"]}
    result.update(resume_bytes=cfg["resume_bytes"], replicated_bytes=cfg["replicated_bytes"])
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["dist_port"]))
    try:
        dcp_runner.launch_ranks(__file__, cfg, env, timeout_s=cfg.get("timeout_s", 1200))
        with open(cfg["out"] + ".rank0") as rank0:
            result["phases"] = json.load(rank0)["phases"]
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    with open(cfg["out"], "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
