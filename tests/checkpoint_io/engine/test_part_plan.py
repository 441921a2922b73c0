"""A checkpoint's tensor bytes are counted before ``torch.save`` runs, so its upload is planned: equal
parts that upload side by side, not the 5, 10, 20 MiB ramp of a stream of unknown size."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from s3_checkpoint_io import S3CheckpointIO
from support.fault_proxy import FaultProxy


def state_of(mib: int) -> dict[str, Any]:
    weights = torch.arange(mib * 2**18, dtype=torch.float32)  # mib MiB
    return {"state_dict": {"w": weights, "tied": weights}, "epoch": 0}  # one storage, counted once


@pytest.mark.parametrize("async_checkpointing", [False, True], ids=["sync", "async"])
def test_a_26_mib_checkpoint_uploads_as_five_equal_parts(
    s3_server: Any, bucket: str, s3_client: Any, async_checkpointing: bool
) -> None:
    url = f"s3://{bucket}/run/planned.ckpt"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        io = S3CheckpointIO(
            f"s3://{bucket}/run", async_checkpointing=async_checkpointing, endpoint_url=proxy.url
        )
        try:
            io.save_checkpoint(state_of(26), url)
            io.wait_for_saves(timeout=60)
        finally:
            io.teardown()
        # the ramp would send 3 parts (5 + 10 + 11 MiB, the last two setting the pace)
        assert proxy.count("UploadPart") == 5
    key = url.removeprefix(f"s3://{bucket}/")
    sizes = [
        s3_client.head_object(Bucket=bucket, Key=key, PartNumber=n)["ContentLength"] for n in range(1, 6)
    ]
    assert len(set(sizes[:4])) == 1
    assert sizes[4] <= sizes[0]
    assert torch.equal(
        S3CheckpointIO(f"s3://{bucket}/run").load_checkpoint(url)["state_dict"]["w"],
        state_of(26)["state_dict"]["w"],
    )
