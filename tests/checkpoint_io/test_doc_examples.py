"""Every Lightning and Fabric ```python block of the README and docs/ runs against the local S3 server.

The blocks read as a user would write them (``s3://my-bucket/...``, a ``model`` and ``datamodule`` of
their own); the test creates the buckets they name on moto's server, points the AWS settings at it,
gives them a tiny ``model`` and ``datamodule``, and caps Lightning's Trainer through its documented
``PL_TRAINER_*`` defaults (a block's own arguments still win).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from support.doc_examples import Block, runnable

BLOCKS = runnable("checkpoint_io")
TRAINER_DEFAULTS = {
    "PL_TRAINER_MAX_STEPS": "6",
    "PL_TRAINER_ACCELERATOR": "cpu",
    "PL_TRAINER_DEVICES": "1",
    "PL_TRAINER_LOGGER": "False",
    "PL_TRAINER_ENABLE_PROGRESS_BAR": "False",
    "PL_TRAINER_ENABLE_MODEL_SUMMARY": "False",
}


def _loader() -> DataLoader[Any]:
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


class DocModel(pl.LightningModule):
    """The ``model`` a block trains: a linear regression logging ``val_loss``, as the examples monitor."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        return _loader()


class DocData(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader[Any]:
        return _loader()


def test_the_lightning_and_fabric_examples_are_found() -> None:
    names = [b.name for b in BLOCKS]
    assert any(n.startswith("README.md") for n in names), names
    assert any(n.startswith("docs/fabric.md") for n in names), names
    assert any(n.startswith("docs/getting-started.md") for n in names), names


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_the_example_runs(
    block: Block, buckets_for: Any, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buckets_for(block)
    monkeypatch.chdir(tmp_path)
    for name, value in TRAINER_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"model": DocModel(), "datamodule": DocData(), "__name__": "__main__"}
    try:
        exec(compile(block.code, block.name, "exec"), namespace)
    finally:  # a sharded Fabric example joins a (one-process) group: leave none to the next test
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    for bucket in block.buckets:  # what the example saved is in its bucket
        assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] >= 1, bucket
