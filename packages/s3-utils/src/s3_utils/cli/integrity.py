"""Recompute an object's stored checksums from its bytes: S3's additional checksum (CRC64NVME, CRC32C,
CRC32, SHA256 or SHA1; full-object or composite) and the MD5 ETag.

S3 keeps what it was sent, so a match proves the bytes read are the bytes written. A multipart object's
composite checksum is the checksum of its parts' checksums, and its ETag the MD5 of its parts' MD5s, each
with ``-<parts>`` appended; all parts but the last have the same size.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from awscrt import checksums

Buffer = bytes | bytearray | memoryview

_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')


def _crc(fn: Callable[[Buffer], int], width: int) -> Callable[[Buffer], bytes]:
    return lambda data: fn(data).to_bytes(width, "big")


ALGORITHMS: dict[str, Callable[[Buffer], bytes]] = {
    "CRC64NVME": _crc(checksums.crc64nvme, 8),
    "CRC32C": _crc(checksums.crc32c, 4),
    "CRC32": _crc(checksums.crc32, 4),
    "SHA256": lambda data: hashlib.sha256(data).digest(),
    "SHA1": lambda data: hashlib.sha1(data, usedforsecurity=False).digest(),
}
"""Digest functions for the checksum algorithms S3 stores, by S3's name, strongest-listed first."""


@dataclass(frozen=True)
class Check:
    """The outcome of one integrity check.

    Attributes:
        name: what was checked (``"crc64nvme"``, ``"etag"``, ``"size"``, ...).
        ok: True if it matched, False if it did not, None if it could not be checked.
        detail: one line for the user.
    """

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class StoredChecksum:
    """An additional checksum as a HEAD with ``ChecksumMode=ENABLED`` reports it.

    Attributes:
        algorithm: S3's name, e.g. ``CRC64NVME``.
        value: base64, with ``-<parts>`` for a composite.
        composite: whether it is a checksum of part checksums.
    """

    algorithm: str
    value: str
    composite: bool


def stored_checksum(head: Mapping[str, Any]) -> StoredChecksum | None:
    """The additional checksum in a HeadObject answer, or None if the object has none we can compute."""
    for algorithm in ALGORITHMS:
        value = head.get(f"Checksum{algorithm}")
        if value:
            composite = head.get("ChecksumType") == "COMPOSITE" or parts_in(value) is not None
            return StoredChecksum(algorithm, str(value), composite)
    return None


def parts_in(value: str | None) -> int | None:
    """The part count in a multipart checksum or ETag (``...-<n>``), or None for a single part."""
    if not value:
        return None
    head, dash, tail = value.strip('"').rpartition("-")
    return int(tail) if dash and head and tail.isdigit() else None


def _pieces(data: Buffer, part_sizes: Sequence[int]) -> list[memoryview]:
    view = memoryview(data)
    pieces, start = [], 0
    for size in part_sizes:
        pieces.append(view[start : start + size])
        start += size
    if start != len(view):  # the parts do not add up to these bytes: compare against what they say
        pieces.append(view[start:])
    return pieces or [view]


def check_checksum(data: Buffer, stored: StoredChecksum | None, part_sizes: Sequence[int] | None) -> Check:
    """Compare a stored additional checksum (full-object or composite) with the one of ``data``.

    Some S3-compatible servers report a multipart object's composite checksum without its ``-<parts>``
    suffix or ``ChecksumType``; so when the type is not stated, a value that does not match as a
    full-object checksum is also tried as a composite one (when ``part_sizes`` are known).

    Args:
        data: the object's bytes.
        stored: from :func:`stored_checksum`, or None if the object has none.
        part_sizes: each part's length, for a multipart object; None for a single part.
    """
    if stored is None:
        return Check("checksum", None, "no additional checksum stored with the object")
    name = stored.algorithm.lower()
    digest = ALGORITHMS[stored.algorithm]
    if not stored.composite:
        actual = base64.b64encode(digest(data)).decode("ascii")
        if actual == stored.value:
            return Check(name, True, f"full object: {actual}")
        if part_sizes is None:
            return Check(name, False, f"full object: stored {stored.value}, read {actual}")
    elif part_sizes is None:
        return Check(name, None, "composite of parts, but the part sizes are unknown")
    pieces = _pieces(data, part_sizes)
    combined = base64.b64encode(digest(b"".join(digest(p) for p in pieces))).decode("ascii")
    actual = f"{combined}-{len(pieces)}" if parts_in(stored.value) is not None else combined
    ok = actual == stored.value
    return Check(
        name,
        ok,
        f"composite of {len(pieces)} parts: stored {stored.value}, read {actual}",
    )


def check_etag(data: Buffer, etag: str, part_sizes: Sequence[int] | None) -> Check:
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
        return Check("etag", ok, f"MD5: stored {stored}, read {actual}")
    if part_sizes is None:
        return Check("etag", None, f"multipart ETag of {parts} parts, but the part sizes are unknown")
    pieces = _pieces(data, part_sizes)
    joined = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in pieces)
    actual = f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(pieces)}"
    ok = actual == f"{stored}-{parts}"
    return Check("etag", ok, f"MD5 of {parts} parts: stored {stored}-{parts}, read {actual}")
