"""The ``s3ckpt`` command line: list, copy, delete, clean up, benchmark and verify S3 checkpoints.

Only s3-utils is needed; the parts that need torch (does a checkpoint load, a torch save/load bench) come
from plugins registered in the ``s3ckpt.plugins`` entry-point group (see :mod:`s3_utils.cli.plugins`).
"""

from __future__ import annotations

from s3_utils.cli.app import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
