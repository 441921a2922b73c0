"""S3FSDPStrategy's checkpoint methods at the DCP level, in one process (FSDP1 itself needs CUDA).

The save and removal paths are the ones S3ModelParallelStrategy shares (tested in a real 2-rank fit in
test_sharded_lightning.py); here the FSDP class is checked on its own: what it commits, that Lightning's
state is an item of the same commit, and that removing deletes the whole prefix.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3_checkpoint_io.dcp import S3StorageReader
from s3_checkpoint_io.strategies import LIGHTNING_STATE_KEY, S3FSDPStrategy
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _checkpoint() -> dict[str, Any]:
    return {
        "state_dict": {"layer.weight": torch.arange(12.0).reshape(3, 4)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 0.1}]}],
        "global_step": 5,
        "epoch": 1,
        "loops": {"fit_loop": {"batches": 5}},
    }


def test_fsdp_strategy_commits_shards_and_lightning_state_together_and_removes_the_whole_prefix(
    s3_client: Any, bucket: str
) -> None:
    url = f"s3://{bucket}/run/epoch=1-step=5.ckpt"
    strategy = S3FSDPStrategy()

    strategy.save_checkpoint(_checkpoint(), url)

    keys = object_keys(s3_client, bucket, "run/")
    assert "run/epoch=1-step=5.ckpt/.metadata" in keys
    assert not [key for key in keys if key.endswith("meta.pt")]
    state: dict[str, Any] = {"model": {"layer.weight": torch.zeros(3, 4)}, LIGHTNING_STATE_KEY: b""}
    dcp.load(state, storage_reader=S3StorageReader(url))
    assert torch.equal(state["model"]["layer.weight"], torch.arange(12.0).reshape(3, 4))
    rest = torch.load(io.BytesIO(state[LIGHTNING_STATE_KEY]), weights_only=False)
    assert rest == {"global_step": 5, "epoch": 1, "loops": {"fit_loop": {"batches": 5}}}

    strategy.remove_checkpoint(url)
    assert object_keys(s3_client, bucket, "run/") == []


def test_fsdp_strategy_refuses_a_full_state_dict_on_s3_before_writing(s3_client: Any, bucket: str) -> None:
    strategy = S3FSDPStrategy(state_dict_type="full")
    with pytest.raises(ValueError, match="state_dict_type='sharded'"):
        strategy.save_checkpoint(_checkpoint(), f"s3://{bucket}/run/x.ckpt")
    assert object_keys(s3_client, bucket, "run/") == []
