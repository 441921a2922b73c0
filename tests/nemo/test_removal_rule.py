"""One removal rule (s3_checkpoint_io.removal) decides for both the Lightning and the NeMo callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nemo_s3_integration.model_checkpoint import S3NeMoModelCheckpoint
from s3_checkpoint_io import S3ModelCheckpoint
from s3_checkpoint_io.removal import may_remove_checkpoint

DIRPATH = "s3://bkt/run"
CASES = [
    # previous, current, resumed_from, may remove
    ("s3://bkt/run/step=2.ckpt", "s3://bkt/run/step=4.ckpt", None, True),
    ("s3://bkt/run/step=4.ckpt", "s3://bkt/run/step=4.ckpt", None, False),  # the same checkpoint
    # the checkpoint training resumed from
    ("s3://bkt/run/step=2.ckpt", "s3://bkt/run/step=4.ckpt", "s3://bkt/run/step=2.ckpt", False),
    ("s3://bkt/other-run/last.ckpt", "s3://bkt/run/last.ckpt", None, False),  # another run's directory
    ("s3://bkt/run-old/last.ckpt", "s3://bkt/run/last.ckpt", None, False),  # a sibling sharing the prefix
    ("/local/last.ckpt", "s3://bkt/run/last.ckpt", None, False),  # not S3
]


@pytest.mark.parametrize(("previous", "current", "resumed", "expected"), CASES)
def test_both_callbacks_apply_the_same_removal_rule(
    previous: str, current: str, resumed: str | None, expected: bool
) -> None:
    trainer = SimpleNamespace(ckpt_path=resumed)
    lightning = S3ModelCheckpoint(DIRPATH)
    nemo = S3NeMoModelCheckpoint(dirpath=DIRPATH)

    assert may_remove_checkpoint(previous, current, dirpath=DIRPATH, resumed_from=resumed) is expected
    assert lightning._should_remove_checkpoint(trainer, previous, current) is expected  # type: ignore[arg-type]
    assert nemo._should_remove_checkpoint(trainer, previous, current) is expected
