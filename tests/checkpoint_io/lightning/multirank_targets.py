"""Rank bodies for test_multirank_faults.py (run by support.ranks.launch)."""

from __future__ import annotations

import json
import pathlib

import torch
import torch.distributed as dist

from s3_checkpoint_io import S3CheckpointIO
from support.ranks import init_process_group

STATE_BYTES = 12 * 2**20  # over two 5 MiB parts: every save is a multipart upload


def save_shard_then_barrier(
    dirpath: str, direct_url: str, proxy_url: str, faulty_rank: str, mode: str, out_dir: str
) -> None:
    """Every rank saves its own shard at the same moment, then all meet in a barrier.

    Only ``faulty_rank`` talks to S3 through the fault proxy, as one node behind a throttled prefix.
    """
    init_process_group(timeout_s=60)
    rank = dist.get_rank()
    endpoint = proxy_url if rank == int(faulty_rank) else direct_url
    io = S3CheckpointIO(dirpath, chunk_size_MB=5, async_checkpointing=mode == "async", endpoint_url=endpoint)
    torch.manual_seed(rank)
    shard = {"rank": rank, "weights": torch.randn(STATE_BYTES // 4)}
    dist.barrier()
    io.save_checkpoint(shard, f"{dirpath}/shard_rank_{rank:02d}.ckpt")
    io.teardown()  # waits for an async save and raises its failure, if any
    dist.barrier()
    loaded = io.load_checkpoint(f"{dirpath}/shard_rank_{rank:02d}.ckpt")
    result = {"rank": rank, "identical": bool(torch.equal(loaded["weights"], shard["weights"]))}
    pathlib.Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
