"""Two saves racing on one prefix: the conditional metadata PUT lets exactly one of them commit."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.storage import WriteResult
from torch.futures import Future

from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


class _OvertakenWriter(S3StorageWriter):
    """Another job commits at the same prefix while this save writes its shard."""

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        dcp.save({"w": torch.full((4,), 7.0)}, storage_writer=S3StorageWriter(self.layout.prefix_url))
        return super().write_data(plan, planner)


@pytest.mark.parametrize("earlier_commit", [False, True], ids=["first-commit", "overwrite"])
def test_dcp_save_overtaken_by_another_jobs_commit_fails_and_leaves_the_other_checkpoint(
    bucket: str, s3_client: Any, earlier_commit: bool
) -> None:
    url = f"s3://{bucket}/shared"
    if earlier_commit:
        dcp.save({"w": torch.full((4,), 1.0)}, storage_writer=S3StorageWriter(url))

    with pytest.raises(CheckpointException) as caught:
        dcp.save({"w": torch.full((4,), 2.0)}, storage_writer=_OvertakenWriter(url))
    assert "another save committed here while this one ran" in str(caught.value.failures[0])

    loaded = {"w": torch.zeros(4)}
    dcp.load(loaded, storage_reader=S3StorageReader(url))
    assert torch.equal(loaded["w"], torch.full((4,), 7.0))  # the other job's checkpoint, whole
    assert len([key for key in object_keys(s3_client, bucket) if key.endswith(".distcp")]) == 1
