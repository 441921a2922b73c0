"""What S3 says about one object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ObjectInfo:
    """One object's metadata, from a HEAD or a listing.

    Attributes:
        url: ``s3://bucket/key``.
        bucket: the bucket.
        key: the key.
        size: size in bytes.
        etag: the ETag, with its quotes (as S3 sends it; pass it back in ``If-Match`` as is).
        last_modified: when it was written (UTC).
        checksum_crc64nvme: the stored CRC64NVME (base64), when the server returned one (HEAD only).
        checksum_type: ``FULL_OBJECT`` or ``COMPOSITE`` (a checksum of part checksums), when known.
    """

    url: str
    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    checksum_crc64nvme: str | None = None
    checksum_type: str | None = None

    @property
    def full_object_checksum(self) -> str | None:
        """The CRC64NVME of the whole object's bytes, if the server gave one (not a composite)."""
        value = self.checksum_crc64nvme
        if not value or "-" in value or self.checksum_type == "COMPOSITE":
            return None
        return value
