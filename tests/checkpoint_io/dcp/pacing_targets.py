"""What each rank runs in the pacing test (see support.ranks): a flat-layout sharded save through a
proxy that emulates S3's request-rate limits, told the proxy's rates or left with S3's own."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from s3_checkpoint_io.dcp import S3StorageWriter
from s3_utils import S3ClientConfig
from support.ranks import init_process_group

SHARD_ELEMENTS = 12 * 1024 * 1024 // 4  # float32: 12 MiB, three 5 MiB parts per rank's shard


def save_flat(url: str, endpoint_url: str, put_per_s: str) -> None:
    """Every rank saves a shard of three parts under ``url`` (flat: one prefix for all), its writer
    told that the store serves ``put_per_s`` PUT-class requests per second per prefix."""
    init_process_group(timeout_s=90)
    rank = dist.get_rank()
    config = S3ClientConfig.from_env(
        endpoint_url=endpoint_url, put_requests_per_prefix_per_s=float(put_per_s)
    )
    writer = S3StorageWriter(
        url, chunk_size_MB=5, max_concurrency=4, key_prefix_strategy="flat", client_config=config
    )
    dcp.save({f"rank{rank}": torch.full((SHARD_ELEMENTS,), float(rank))}, storage_writer=writer)
    dist.barrier()
    dist.destroy_process_group()
