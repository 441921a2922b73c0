"""Reading the URLs and paths given on the command line, once, at the edge."""

from __future__ import annotations

from s3_dirpath_utils import require_s3_url
from s3_utils.cli.console import UsageError


def s3_url(text: str, what: str = "URL") -> str:
    """``text`` as a canonical ``s3://bucket/key`` URL with a valid bucket name.

    Raises:
        UsageError: naming the problem, if it is not a valid S3 URL.
    """
    try:
        return require_s3_url(text, what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def as_prefix(url: str) -> str:
    """``url`` with exactly one trailing ``/``, so that listing it lists a folder, not a name prefix."""
    return url if url.endswith("/") else url + "/"


def basename(url_or_path: str) -> str:
    """The last ``/``-separated part, ignoring a trailing ``/``."""
    return url_or_path.rstrip("/").rsplit("/", 1)[-1]
