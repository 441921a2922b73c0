"""Run on each rank by test_node_reads.py (via support.ranks.launch)."""

from __future__ import annotations

import functools
import os
import pathlib
import socket
import traceback

import torch
import torch.distributed as dist

from s3_checkpoint_io import S3CheckpointIO
from support.ranks import init_process_group


def load_on_every_rank(url: str, endpoint_url: str, out_dir: str) -> None:
    """``load_checkpoint_on_every_rank(url)``; write the error this rank got (or "loaded") to a file."""
    init_process_group()
    rank = int(os.environ["RANK"])
    io = S3CheckpointIO(url.rsplit("/", 1)[0], endpoint_url=endpoint_url)
    try:
        io.load_checkpoint_on_every_rank(url)
        outcome = "loaded"
    except Exception as exc:  # what this rank raised, for the test to read
        outcome = "".join(traceback.format_exception_only(exc)) + "\n".join(getattr(exc, "__notes__", []))
        outcome = f"{type(exc).__name__}|{isinstance(exc, FileNotFoundError)}|{outcome}"
    pathlib.Path(out_dir, f"rank{rank}.txt").write_text(outcome)
    dist.barrier()
    dist.destroy_process_group()


def load_as_two_hosts(url: str, endpoint_url: str, out_dir: str) -> None:
    """``load_checkpoint_on_every_rank(url)`` with ranks 0-1 on host "node0" and 2-3 on "node1".

    One machine stands in for two nodes: this rank's process answers ``socket.gethostname()`` with its
    node's name, which is all a rank knows of where it runs. Saves what it loaded to ``rank<r>.pt``.
    """
    init_process_group()
    rank = int(os.environ["RANK"])
    socket.gethostname = functools.partial(str, f"node{rank // 2}")
    io = S3CheckpointIO(url.rsplit("/", 1)[0], endpoint_url=endpoint_url, chunk_size_MB=5)
    loaded = io.load_checkpoint_on_every_rank(url)
    torch.save(loaded, pathlib.Path(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
