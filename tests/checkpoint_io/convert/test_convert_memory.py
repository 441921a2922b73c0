"""A conversion's memory follows the largest tensor, not the model."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from checkpoint_io.convert import convert_memory_targets
from s3_checkpoint_io.dcp import S3StorageWriter
from support.ranks import spawn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]

MiB = 1024 * 1024
TENSORS, TENSOR_BYTES = 64, 4 * MiB


def test_safetensors_conversion_peak_memory_stays_under_half_the_model(bucket: str, s3_client: Any) -> None:
    state = {f"layer{i}.weight": torch.full((TENSOR_BYTES // 4,), float(i)) for i in range(TENSORS)}
    url = f"s3://{bucket}/big"
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=16))
    del state

    child = spawn(convert_memory_targets.convert, [url, f"s3://{bucket}/hf"])
    output, _ = child.communicate(timeout=300)
    text = output.decode()
    assert child.returncode == 0, text
    report = json.loads(text.strip().splitlines()[-1])

    model = TENSORS * TENSOR_BYTES
    assert report["written"] > model
    print(f"peak RSS growth {report['growth'] / MiB:.1f} MiB for a {model / MiB:.0f} MiB model")
    assert report["growth"] < model / 2
    head = s3_client.head_object(Bucket=bucket, Key="hf/model.safetensors")
    assert head["ContentLength"] == report["written"]
