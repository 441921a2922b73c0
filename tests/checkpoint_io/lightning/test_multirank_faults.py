"""Faults that hit one rank of several saving at once (real torch.distributed, gloo, CPU processes)."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from checkpoint_io.lightning.multirank_targets import save_shard_then_barrier
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = pytest.mark.slow

WORLD_SIZE = 3
FAULTY_RANK = 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_slowdown_on_create_multipart_upload_for_one_rank_retries_and_nobody_hangs(
    s3_server: Any, bucket: str, s3_client: Any, tmp_path: pathlib.Path, mode: str
) -> None:
    dirpath = f"s3://{bucket}/sharded"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add_fault("CreateMultipartUpload", "slowdown", times=2)
        launch(
            save_shard_then_barrier,
            world_size=WORLD_SIZE,
            args=[dirpath, s3_server.endpoint_url, proxy.url, str(FAULTY_RANK), mode, str(tmp_path)],
            timeout_s=150,
        )
        assert proxy.injected == 2
        # the faulty rank asked again after each SlowDown, and only it went through the proxy
        assert proxy.count("CreateMultipartUpload") == 3
        assert proxy.count("CompleteMultipartUpload") == 1

    assert object_keys(s3_client, bucket, "sharded/") == [
        f"sharded/shard_rank_{r:02d}.ckpt" for r in range(WORLD_SIZE)
    ]
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    for rank in range(WORLD_SIZE):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"rank": rank, "identical": True}
