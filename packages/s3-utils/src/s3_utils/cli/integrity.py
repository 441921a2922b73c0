"""Recompute an object's stored checksums from its bytes: CRC32C (full or composite) and the MD5 ETag.

S3 keeps what it was sent, so a match proves the bytes read are the bytes written. A multipart object's
checksums are per part: the composite CRC32C is the CRC32C of the parts' CRC32Cs, and the ETag is the MD5
of the parts' MD5s, each with ``-<parts>`` appended. All parts but the last have the same size.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from s3_utils.checksums import crc32c, to_base64

_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')


@dataclass(frozen=True)
class Check:
    """The outcome of one integrity check.

    Attributes:
        name: what was checked (``"crc32c"``, ``"etag"``, ``"size"``).
        ok: True if it matched, False if it did not, None if it could not be checked.
        detail: one line for the user.
    """

    name: str
    ok: bool | None
    detail: str


def parts_in(value: str | None) -> int | None:
    """The part count in a multipart checksum or ETag (``...-<n>``), or None for a single part."""
    if not value:
        return None
    tail = value.strip('"').rpartition("-")
    return int(tail[2]) if tail[1] and tail[2].isdigit() else None


def _pieces(data: bytes | bytearray | memoryview, part_size: int) -> list[memoryview]:
    view = memoryview(data)
    return [view[start : start + part_size] for start in range(0, len(view), part_size)] or [view]


def check_crc32c(data: bytes | bytearray | memoryview, stored: str | None, part_size: int | None) -> Check:
    """Compare the stored CRC32C (full-object or composite) with the one of ``data``.

    Args:
        data: the object's bytes.
        stored: the ``x-amz-checksum-crc32c`` value, or None if the object has none.
        part_size: the size of every part but the last, needed for a composite checksum.
    """
    if not stored:
        return Check("crc32c", None, "not stored with the object")
    parts = parts_in(stored)
    if parts is None:
        actual = to_base64(crc32c(data))
        ok = actual == stored
        return Check("crc32c", ok, f"{'ok' if ok else 'MISMATCH'}: stored {stored}, read {actual}")
    if part_size is None:
        return Check("crc32c", None, f"composite of {parts} parts, but the part size is unknown")
    pieces = _pieces(data, part_size)
    digest = b"".join(crc32c(p).to_bytes(4, "big") for p in pieces)
    actual = f"{to_base64(crc32c(digest))}-{len(pieces)}"
    ok = actual == stored
    return Check(
        "crc32c",
        ok,
        f"{'ok' if ok else 'MISMATCH'} (composite of {parts} parts): stored {stored}, read {actual}",
    )


def check_etag(data: bytes | bytearray | memoryview, etag: str, part_size: int | None) -> Check:
    """Compare an MD5-style ETag with the MD5 (or MD5 of part MD5s) of ``data``.

    An ETag that is not MD5-shaped (SSE-KMS, SSE-C, some S3-compatible stores) cannot be checked.
    """
    match = _MD5_ETAG.match(etag)
    if match is None:
        return Check("etag", None, f"{etag} is not an MD5 ETag (encrypted object?); not comparable")
    stored, parts = match.group(1), match.group(2)
    if parts is None:
        actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
        ok = actual == stored
        return Check("etag", ok, f"{'ok' if ok else 'MISMATCH'}: stored {stored}, read {actual}")
    if part_size is None:
        return Check("etag", None, f"multipart ETag of {parts} parts, but the part size is unknown")
    pieces = _pieces(data, part_size)
    joined = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in pieces)
    actual = f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(pieces)}"
    ok = actual == f"{stored}-{parts}"
    return Check(
        "etag", ok, f"{'ok' if ok else 'MISMATCH'} ({parts} parts): stored {stored}-{parts}, read {actual}"
    )
