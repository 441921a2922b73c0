"""Asynchronous sharded saves under Fabric: S3FabricModelParallelStrategy (FSDP2, 2 gloo CPU ranks) with
``S3CheckpointIO(async_checkpointing=True)`` saves through the same background saves as the Trainer's.

``fabric.save`` returns before the commit is in S3; a removal waits for the newer commit;
``wait_for_saves`` and ``teardown`` wait for the saves in flight, after which each checkpoint is
committed and loads back exactly as saved.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from checkpoint_io.strategies.fabric_sharded_async_targets import save_in_the_background
from s3_utils.sharded import COMMIT_NAME
from support.fault_proxy import FaultProxy
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TARGET = save_in_the_background


def test_a_fabric_async_sharded_save_returns_before_its_commit_and_is_committed_and_loadable_after_the_wait(
    bucket: str, s3_client: Any, fault_proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    fault_proxy.add_fault("PutObject", "delay", delay_s=1.0, path_contains=f"/{COMMIT_NAME}")
    launch(
        TARGET, world_size=2, args=[f"s3://{bucket}/fabric", str(tmp_path), fault_proxy.url], timeout_s=150
    )

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    first = reports[0]
    assert first["committed_on_return"] == [False, False, False]  # every save returned before its commit
    assert first["step_2_kept_by_the_removal"] is True  # the removal waits for step 4's commit
    assert first["after_wait"] == {"2": False, "4": True}
    assert first["step_6_after_teardown"] is True
    for report in reports:  # every rank's shards and Adam state load back as saved
        assert report["step_4_loads"], report
        assert report["step_6_loads"], report
    prefixes = {key.split("/")[1] for key in object_keys(s3_client, bucket, "fabric/")}
    assert prefixes == {"step-4.ckpt", "step-6.ckpt"}
    committed = fault_proxy.first_success("PutObject", f"step-4.ckpt/{COMMIT_NAME}")
    deleted = fault_proxy.first_success("DeleteObject", f"step-2.ckpt/{COMMIT_NAME}")
    assert committed < deleted  # the older checkpoint's deletion starts after the newer commit
