"""Parsing, building and joining ``s3://bucket/key`` URLs.

``pathlib.Path("s3://bucket/key")`` silently becomes ``s3:/bucket/key`` (a path collapses repeated
slashes). Lightning and NeMo pass paths around as ``Path`` objects, so that form reaches us in practice.
We accept it and normalize it back to ``s3://bucket/key``: the single-slash form is never a valid local
path anyone meant, and rejecting it would break every caller that wraps a URL in ``Path``.
"""

from __future__ import annotations

import os
import re
from typing import Union

S3_PATH_PREFIX = "s3://"
"""The scheme prefix every S3 URL starts with."""

_COLLAPSED_PREFIX = "s3:/"
_PathLike = Union[str, "os.PathLike[str]"]

_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def _as_text(path: _PathLike | None) -> str | None:
    if path is None:
        return None
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        return None
    return path.strip()


def is_s3_url(path: _PathLike | None) -> bool:
    """Return True if ``path`` is an S3 URL.

    Accepts ``str``, any ``os.PathLike`` (including ``pathlib.Path("s3://b/k")``, which collapses to
    ``s3:/b/k``) and ``None`` (False). Surrounding whitespace is ignored. Only the scheme is checked;
    use :func:`parse_s3_url` to validate the bucket and key.
    """
    text = _as_text(path)
    if text is None:
        return False
    return text.startswith(_COLLAPSED_PREFIX)


def normalize_s3_url(path: _PathLike) -> str:
    """Return ``path`` as a canonical ``s3://bucket/key`` string.

    Strips surrounding whitespace and restores the ``//`` that ``pathlib.Path`` drops.

    Raises:
        ValueError: if ``path`` is not an S3 URL.
    """
    text = _as_text(path)
    if text is None or not text.startswith(_COLLAPSED_PREFIX):
        raise ValueError(
            f"not an S3 URL: {path!r}; expected 's3://bucket/key' "
            "(use a local-filesystem API for local paths)"
        )
    if not text.startswith(S3_PATH_PREFIX):
        text = S3_PATH_PREFIX + text[len(_COLLAPSED_PREFIX) :]
    return text


def bucket_name_problem(bucket: str) -> str | None:
    """Return why ``bucket`` breaks the AWS S3 bucket naming rules, or None if it is valid.

    The rules are those for general-purpose buckets: 3-63 characters of lowercase letters, digits,
    dots and hyphens, beginning and ending with a letter or digit, no ``..``, not an IPv4 address, and
    none of the reserved prefixes and suffixes.
    """
    if not 3 <= len(bucket) <= 63:
        return f"must be 3 to 63 characters long (it has {len(bucket)})"
    if not _BUCKET_CHARS.match(bucket):
        return (
            "may contain only lowercase letters, digits, '.' and '-', "
            "and must begin and end with a letter or digit"
        )
    if ".." in bucket:
        return "must not contain two adjacent periods"
    if _IPV4.match(bucket):
        return "must not be formatted as an IP address"
    for prefix in _RESERVED_PREFIXES:
        if bucket.startswith(prefix):
            return f"must not start with the reserved prefix {prefix!r}"
    for suffix in _RESERVED_SUFFIXES:
        if bucket.endswith(suffix):
            return f"must not end with the reserved suffix {suffix!r}"
    return None


def parse_s3_url(url: _PathLike) -> tuple[str, str]:
    """Split an S3 URL into ``(bucket, key)``.

    ``s3://bucket`` and ``s3://bucket/`` give an empty key; a trailing ``/`` on a key is kept, since it
    marks a prefix.

    Raises:
        ValueError: naming the input, if it is not an S3 URL, has no bucket, or the bucket breaks the
            AWS naming rules.
    """
    text = normalize_s3_url(url)
    bucket, _, key = text[len(S3_PATH_PREFIX) :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URL {text!r} has no bucket name; expected 's3://bucket/key'")
    problem = bucket_name_problem(bucket)
    if problem is not None:
        raise ValueError(f"S3 URL {text!r}: bucket name {bucket!r} {problem}")
    return bucket, key


def require_s3_url(path: _PathLike | None, what: str = "path", local_hint: str = "") -> str:
    """Check that ``path`` is a valid S3 URL and return it normalized (``s3://bucket/key``).

    The one check every layer uses at its edge: scheme, bucket present, bucket name valid.

    Args:
        path: what the caller was given (``str``, ``os.PathLike`` or None).
        what: how the caller names it in the message, e.g. ``"S3CheckpointIO dirpath"``.
        local_hint: what to use instead for a local path, appended to the message when ``path`` is
            not an S3 URL at all.

    Raises:
        ValueError: naming ``what``, the value and the problem.
    """
    if not is_s3_url(path):
        shown = os.fspath(path) if isinstance(path, os.PathLike) else path
        hint = f"; {local_hint}" if local_hint else ""
        raise ValueError(f"{what} must be an s3://bucket/key URL, got {shown!r}{hint}")
    try:
        parse_s3_url(path)  # type: ignore[arg-type]  # is_s3_url ruled out None
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return normalize_s3_url(path)  # type: ignore[arg-type]


def build_s3_url(bucket: str, key: str = "") -> str:
    """Build ``s3://bucket/key`` from its parts.

    A leading ``/`` on ``key`` is dropped so that ``build_s3_url("b", "/k")`` is ``s3://b/k``.

    Raises:
        ValueError: if the bucket name breaks the AWS naming rules.
    """
    problem = bucket_name_problem(bucket)
    if problem is not None:
        raise ValueError(f"bucket name {bucket!r} {problem}")
    return f"{S3_PATH_PREFIX}{bucket}/{key.lstrip('/')}"


def join_s3_url(base: _PathLike, *parts: str) -> str:
    """Join key segments onto an S3 URL with exactly one ``/`` between them.

    ``join_s3_url("s3://b/run/", "ckpt", "last.ckpt")`` is ``s3://b/run/ckpt/last.ckpt``. Empty parts
    are skipped; a trailing ``/`` on the last part is kept.

    Raises:
        ValueError: if ``base`` is not a valid S3 URL.
    """
    bucket, key = parse_s3_url(base)
    segments = [key.strip("/")] if key.strip("/") else []
    for index, part in enumerate(parts):
        stripped = part.strip("/")
        if stripped:
            segments.append(stripped)
        if index == len(parts) - 1 and part.endswith("/") and segments:
            segments[-1] += "/"
    return build_s3_url(bucket, "/".join(segments))
