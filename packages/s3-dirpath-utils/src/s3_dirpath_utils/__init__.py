"""Helpers for ``s3://`` URLs, with no dependencies at all.

This is the one place in the project that knows the ``s3://`` syntax: every other layer parses a URL
here once, at its edge, and speaks ``(bucket, key)`` from then on.

The names ``S3_PATH_PREFIX``, ``is_s3_url`` and ``build_s3_url`` match NeMo's ``s3_dirpath_utils``.
"""

from __future__ import annotations

from s3_dirpath_utils._urls import (
    S3_PATH_PREFIX,
    bucket_name_problem,
    build_s3_url,
    is_s3_url,
    join_s3_url,
    normalize_s3_url,
    parse_s3_url,
    require_s3_url,
)

__all__ = [
    "S3_PATH_PREFIX",
    "bucket_name_problem",
    "build_s3_url",
    "is_s3_url",
    "join_s3_url",
    "normalize_s3_url",
    "parse_s3_url",
    "require_s3_url",
]
__version__ = "0.1.0"
