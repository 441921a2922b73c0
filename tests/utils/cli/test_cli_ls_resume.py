"""``s3ckpt ls`` explains the resume choice with the one rule of s3_utils.checkpoint_names."""

from __future__ import annotations

import io
import json
from typing import Any

from s3_utils.cli import exit_codes, main
from s3_utils.cli.console import Console


def s3ckpt(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), console=Console(out=out, err=io.StringIO(), stdin=io.StringIO("")))
    return code, out.getvalue()


def test_ls_marks_the_newest_epoch_and_says_why_when_names_carry_no_step(s3_client: Any, bucket: str) -> None:
    # NeMo's default names: {name}--{val_loss:.4f}-{epoch}; alphabetically "epoch=900" > "epoch=1000".
    for name in ("gpt--val_loss=0.5000-epoch=900-last.ckpt", "gpt--val_loss=0.4000-epoch=1000-last.ckpt"):
        s3_client.put_object(Bucket=bucket, Key=f"run/{name}", Body=b"x" * 100)

    code, out = s3ckpt("ls", f"s3://{bucket}/run")

    assert code == exit_codes.OK, out
    header, *rows = out.splitlines()
    assert header.split() == ["SIZE", "MODIFIED", "(UTC)", "AGE", "STEP", "NAME"]
    marked = [row for row in rows if row.startswith("* ")]
    assert len(marked) == 1
    assert marked[0].endswith("gpt--val_loss=0.4000-epoch=1000-last.ckpt")
    assert marked[0].split()[6] == "-"  # no step in the name
    assert marked[0].split()[5].endswith("s")  # written seconds ago
    assert "resume would pick gpt--val_loss=0.4000-epoch=1000-last.ckpt: highest epoch" in rows


def test_ls_json_gives_the_reason_with_the_choice(s3_client: Any, bucket: str) -> None:
    for step in (900, 1000):
        s3_client.put_object(Bucket=bucket, Key=f"run/m--step={step}-last.ckpt", Body=b"x")

    code, out = s3ckpt("ls", "--json", f"s3://{bucket}/run")

    data = json.loads(out)
    assert code == exit_codes.OK
    assert data["resume"] == f"s3://{bucket}/run/m--step=1000-last.ckpt"
    assert data["resume_reason"] == "highest step"
