"""Exit codes of ``s3ckpt``, stable so that scripts can branch on them."""

from __future__ import annotations

OK = 0
"""The command did what was asked."""

FAILURE = 1
"""An operational failure: S3 or the local disk failed, access was denied, retries ran out."""

USAGE = 2
"""The command line was wrong (bad option, bad URL, a refused confirmation). Nothing was changed."""

NOT_FOUND = 3
"""The object, prefix or local file named on the command line does not exist."""

CHECK_FAILED = 4
"""``verify`` found a checkpoint whose checksum does not match or that does not load."""

INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT, as shells report it)."""
