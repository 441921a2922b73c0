"""What each rank runs in the conversion tests: a sharded save of row- and column-sharded DTensors."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from s3_checkpoint_io.dcp import S3StorageWriter
from support.ranks import init_process_group


def full_state() -> dict[str, Any]:
    """The checkpoint as plain tensors: what every conversion must give back."""
    generator = torch.Generator().manual_seed(3)
    return {
        "state_dict": {
            "layer.row": torch.randn(8, 6, generator=generator),
            "layer.col": torch.randn(4, 10, generator=generator),
            "layer.half": torch.randn(6, 4, generator=generator).to(torch.bfloat16),
            "layer.bias": torch.randn(6, generator=generator),
            "layer.ids": torch.arange(12, dtype=torch.int64).reshape(3, 4),
        },
        "optimizer": {"state": {"exp_avg": torch.ones(8, 6)}},
        "step": 3,
    }


def save(url: str) -> None:
    """Every rank saves its shards: ``row`` split by rows, ``col`` and ``half`` by columns."""
    init_process_group(timeout_s=60)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    state = full_state()
    model = state["state_dict"]
    model["layer.row"] = distribute_tensor(model["layer.row"], mesh, [Shard(0)])
    model["layer.col"] = distribute_tensor(model["layer.col"], mesh, [Shard(1)])
    model["layer.half"] = distribute_tensor(model["layer.half"], mesh, [Shard(1)])
    model["layer.bias"] = distribute_tensor(model["layer.bias"], mesh, [Replicate()])
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    dist.destroy_process_group()
