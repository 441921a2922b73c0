"""Run the ``s3ckpt`` CLI in-process, with its console captured."""

from __future__ import annotations

import io
from typing import NamedTuple

from s3_utils.cli import main
from s3_utils.cli.console import Console


class CliResult(NamedTuple):
    """What one ``s3ckpt`` run gave: its exit code and what it printed to stdout and stderr."""

    code: int
    out: str
    err: str


def s3ckpt(*argv: str, progress: bool = False) -> CliResult:
    """Run ``s3ckpt argv...`` with empty stdin (so no confirmation prompt is answered).

    Args:
        *argv: the command line after ``s3ckpt``.
        progress: pass ``--progress`` first.

    Returns:
        The exit code and the captured output.
    """
    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, stdin=io.StringIO(""))
    code = main([*(["--progress"] if progress else []), *argv], console=console)
    return CliResult(code, out.getvalue(), err.getvalue())
