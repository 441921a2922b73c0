"""CRC64NVME checksums as S3 sends them (base64 of the 8 big-endian bytes), with awscrt's C code.

CRC64NVME is the algorithm S3 supports as a full-object checksum for multipart uploads (one checksum
of all the bytes, not a checksum of part checksums), so a ranged download can verify the whole object.
CRCs of consecutive pieces combine into the CRC of the whole without reading the bytes again, so
parallel parts and ranges each checksum their own bytes.
"""

from __future__ import annotations

import base64

from awscrt import checksums

ALGORITHM = "CRC64NVME"
"""The name S3 uses in ``ChecksumAlgorithm``."""


def crc(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    """The CRC64NVME of ``data``, continuing from ``previous`` (the CRC of the bytes before it)."""
    return int(checksums.crc64nvme(data, previous))


def combine(first: int, second: int, second_length: int) -> int:
    """The CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``."""
    return int(checksums.combine_crc64nvme(first, second, second_length))


def to_base64(value: int) -> str:
    """A CRC as S3 writes it in ``x-amz-checksum-crc64nvme``."""
    return base64.b64encode(value.to_bytes(8, "big")).decode("ascii")


class RunningChecksum:
    """The CRC of a sequence of pieces, each checksummed independently and joined in order."""

    def __init__(self) -> None:
        self.value = 0
        self.length = 0

    def append(self, value: int, length: int) -> None:
        """Add the next piece (its CRC and length) after everything appended so far."""
        self.value = combine(self.value, value, length) if self.length else value
        self.length += length

    @property
    def base64(self) -> str:
        """The combined CRC in S3's form."""
        return to_base64(self.value)
