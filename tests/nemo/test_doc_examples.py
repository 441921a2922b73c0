"""Every NeMo ```python block of the README and docs/ runs against the local S3 server with real NeMo.

A block that loads ``config.yaml`` gets the ```yaml block the page shows right before it, with only the
trainer shrunk to one CPU process and a few steps; the buckets it names are created on moto's server,
and ``model`` is a tiny regression model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nemo_app import TinyRegression
from omegaconf import OmegaConf

from support.doc_examples import Block, runnable

BLOCKS = runnable("nemo")
SMALL_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "max_steps": 4,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def test_the_nemo_quick_start_is_found() -> None:
    assert any(b.name.startswith("docs/nemo.md") for b in BLOCKS), [b.name for b in BLOCKS]


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_the_example_runs(
    block: Block, buckets_for: Any, s3_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    yaml = block.preceding_yaml()
    if "config.yaml" in block.code:
        assert yaml is not None, f"{block.name} loads config.yaml but the page shows none before it"
        cfg = OmegaConf.merge(OmegaConf.create(yaml), {"trainer": SMALL_TRAINER})
        OmegaConf.save(cfg, tmp_path / "config.yaml")
    with_config = Block(block.path, block.line, block.code + (yaml or ""), None)
    buckets_for(with_config)
    exec(compile(block.code, block.name, "exec"), {"model": TinyRegression(), "__name__": "__main__"})
    for bucket in with_config.buckets:  # what the example saved is in its bucket
        assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] >= 1, bucket
