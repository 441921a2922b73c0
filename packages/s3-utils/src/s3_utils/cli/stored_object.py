"""What S3 stores about one object, read for ``verify``: its HEAD, its part sizes, and the check of
downloaded bytes against them.

Parts need not be equal in size (our writer grows them as an upload goes), so a multipart object's
part sizes are read one HEAD per part (``PartNumber``) rather than assumed from the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3_dirpath_utils import parse_s3_url
from s3_utils import S3Store
from s3_utils.cli.integrity import Buffer, Check, check_checksum, check_etag, parts_in, stored_checksum
from s3_utils.retry import Requester


@dataclass(frozen=True)
class StoredObject:
    """One object's HEAD answer (with its additional checksum) and, for a multipart object, its parts.

    Attributes:
        head: the HeadObject answer, asked with ``ChecksumMode=ENABLED``.
        part_sizes: each part's length in order, or None for an object uploaded in one piece.
    """

    head: dict[str, Any]
    part_sizes: list[int] | None

    @property
    def etag(self) -> str:
        """The object's ETag, with its quotes."""
        return str(self.head["ETag"])

    @property
    def size(self) -> int:
        """The object's length in bytes."""
        return int(self.head["ContentLength"])


def read_stored_object(store: S3Store, url: str) -> StoredObject:
    """HEAD ``url`` (and each of its parts, if it was a multipart upload).

    Raises:
        S3Error: if a HEAD fails after retries (``S3NotFoundError`` for a missing object).
    """
    head = _head(store, url, ChecksumMode="ENABLED")
    parts = parts_in(str(head["ETag"]))
    if parts is None:
        return StoredObject(head, None)
    sizes = [int(_head(store, url, PartNumber=number)["ContentLength"]) for number in range(1, parts + 1)]
    return StoredObject(head, sizes)


def stored_checks(data: Buffer, stored: StoredObject) -> list[Check]:
    """Compare ``data`` with the object's stored checksum and, only when that cannot be compared, its
    MD5 ETag (a fallback: it is no MD5 for KMS-encrypted objects). The last check is the deciding one."""
    checksum = check_checksum(data, stored_checksum(stored.head), stored.part_sizes)
    if checksum.ok is None:
        return [checksum, check_etag(data, stored.etag, stored.part_sizes)]
    return [checksum]


def _head(store: S3Store, url: str, **extra: Any) -> dict[str, Any]:
    bucket, key = parse_s3_url(url)
    requester = Requester(store.transfer_config, store.client_config.endpoint_name)
    answer = requester.call(
        lambda: store.client.head_object(Bucket=bucket, Key=key, **extra),
        operation="HeadObject",
        bucket=bucket,
        key=key,
    )
    return dict(answer)
