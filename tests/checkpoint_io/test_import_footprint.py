"""What importing the package loads: each import pulls in only the layers its job needs.

Each check runs in a fresh interpreter, so modules the test process already imported do not count.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

SHARDED = ("s3_checkpoint_io.dcp", "s3_checkpoint_io.strategies", "torch.distributed.checkpoint")


@functools.cache  # one fresh interpreter per statement, shared by the tests that ask
def _modules_after(statement: str) -> frozenset[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return frozenset(json.loads(out.stdout.splitlines()[-1]))


def _loaded(modules: frozenset[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_importing_the_package_loads_neither_lightning_nor_sharded_checkpointing() -> None:
    modules = _modules_after("import s3_checkpoint_io")
    for package in ("lightning", *SHARDED):
        assert _loaded(modules, package) == [], f"import s3_checkpoint_io loaded {package}"


@pytest.mark.parametrize("package", SHARDED)
def test_the_plugin_loads_no_sharded_checkpointing_beyond_what_lightning_itself_loads(package: str) -> None:
    lightning_alone = _modules_after("import lightning.pytorch")
    modules = _modules_after("from s3_checkpoint_io import S3CheckpointIO, S3ModelCheckpoint")
    assert "s3_checkpoint_io.lightning.checkpoint_io" in modules
    assert _loaded(modules, package) == _loaded(lightning_alone, package)


def test_the_upload_helper_imports_no_lightning() -> None:
    modules = _modules_after("import s3_checkpoint_io.background.upload_helper")
    assert "s3_checkpoint_io.background.upload_helper" in modules
    assert _loaded(modules, "lightning") == []
    assert _loaded(modules, "s3_checkpoint_io.lightning") == []
