"""Server-side copies: the bytes of one object become another object without leaving S3.

An object up to :data:`~s3_utils.limits.MAX_COPY_OBJECT_SIZE` is one CopyObject, which S3 applies
atomically. A larger one is a multipart upload whose parts are UploadPartCopy ranges (sized like a
streaming upload's parts, :func:`~s3_utils.part_sizes.part_size`), copied in parallel and completed only
once every part is there; any failure aborts it, so the target appears whole or not at all. Every
request carries ``x-amz-copy-source-if-match`` with the source's ETag: an overwrite of the source during
the copy fails it (412) instead of mixing two versions. The source's full-object CRC64NVME is carried
over and checked: by the server when it completes a multipart copy, by us against CopyObject's answer.

Some S3-compatible stores do not implement copies or a policy refuses them; :func:`copy_refused` tells
that answer apart, and the store then moves the bytes through the client instead.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from s3_utils import checksums
from s3_utils.errors import S3Error, S3IntegrityError
from s3_utils.objects import ObjectInfo
from s3_utils.parallel import run_all
from s3_utils.part_sizes import part_size
from s3_utils.stats import StatsRecorder
from s3_utils.transport import Transport

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

COPY_OPERATIONS = frozenset({"CopyObject", "UploadPartCopy"})
"""The requests that copy bytes server-side."""
REFUSED_CODES = frozenset({"NotImplemented", "XNotImplemented", "MethodNotAllowed", "AccessDenied"})
"""Error codes with which a store refuses a copy request it does not support or allow."""
REFUSED_STATUS = frozenset({403, 405, 501})
"""HTTP statuses with which a store refuses a copy request (forbidden, not allowed, not implemented)."""


def copy_refused(error: S3Error) -> bool:
    """Whether ``error`` is a store refusing a server-side copy (so moving the bytes through the client
    may still work), rather than a copy that failed."""
    if error.operation not in COPY_OPERATIONS:
        return False
    return error.code in REFUSED_CODES or error.status in REFUSED_STATUS


def server_copy(
    transport: Transport,
    source: ObjectInfo,
    bucket: str,
    key: str,
    stats: StatsRecorder,
    *,
    single_request_limit: int,
) -> None:
    """Copy ``source`` to ``bucket``/``key`` inside S3, atomically.

    Args:
        transport: the store's client, retry policy, settings and workers.
        source: the source's HEAD; its ETag pins the version copied.
        bucket: the target bucket.
        key: the target key.
        stats: counts requests, retries and the bytes copied.
        single_request_limit: the largest object copied with one CopyObject (S3's 5 GiB; lower only in
            tests, to copy a small object part by part).

    Raises:
        S3ObjectChangedError: (as a 412 ``S3Error``) the source was overwritten during the copy.
        S3IntegrityError: the target's CRC64NVME is not the source's.
        S3Error: any other failure (see :func:`copy_refused`); nothing is left at the target.
    """
    if source.size <= single_request_limit:
        _copy_whole(transport, source, bucket, key, stats)
    else:
        _MultipartCopy(transport, source, bucket, key, stats).run()


def _copy_source(source: ObjectInfo) -> dict[str, Any]:
    return {"CopySource": {"Bucket": source.bucket, "Key": source.key}, "CopySourceIfMatch": source.etag}


def _copy_whole(
    transport: Transport, source: ObjectInfo, bucket: str, key: str, stats: StatsRecorder
) -> None:
    extra = checksums.request_arguments("CopyObject") if transport.transfer.checksum else {}
    response = transport.requester.call(
        lambda: transport.client.copy_object(Bucket=bucket, Key=key, **_copy_source(source), **extra),
        operation="CopyObject",
        bucket=bucket,
        key=key,
        stats=stats,
    )
    copied = response.get("CopyObjectResult", {}).get("ChecksumCRC64NVME")
    expected = source.full_object_checksum
    if copied and expected and copied != expected:
        # CopyObject already replaced the target: it must not stay under a name that promises the source
        transport.requester.call(
            lambda: transport.client.delete_object(Bucket=bucket, Key=key),
            operation="DeleteObject",
            bucket=bucket,
            key=key,
        )
        raise S3IntegrityError(
            f"s3://{bucket}/{key}: CRC64NVME of the copy is {copied}, the source {source.url} has "
            f"{expected}; the copy was deleted"
        )
    stats.add_bytes(source.size)


class _MultipartCopy:
    """One multipart upload made of UploadPartCopy ranges; completed whole or aborted."""

    def __init__(
        self, transport: Transport, source: ObjectInfo, bucket: str, key: str, stats: StatsRecorder
    ) -> None:
        self._t = transport
        self._source = source
        self._bucket = bucket
        self._key = key
        self._stats = stats
        self._parts: dict[int, CompletedPartTypeDef] = {}
        self._lock = threading.Lock()
        self._checksum = source.full_object_checksum if transport.transfer.checksum else None

    def _ranges(self) -> list[tuple[int, int, int]]:
        ranges: list[tuple[int, int, int]] = []
        start = 0
        while start < self._source.size:
            number = len(ranges) + 1
            end = min(start + part_size(self._t.transfer.chunk_size, number), self._source.size)
            ranges.append((number, start, end))
            start = end
        return ranges

    def run(self) -> None:
        extra = checksums.request_arguments("CreateMultipartUpload") if self._checksum else {}
        upload_id = self._request(
            "CreateMultipartUpload",
            lambda: self._t.client.create_multipart_upload(Bucket=self._bucket, Key=self._key, **extra),
        )["UploadId"]
        try:
            run_all(
                self._t.executor,
                [functools.partial(self._copy_part, upload_id, *part) for part in self._ranges()],
            )
            self._complete(upload_id)
        except BaseException:
            self._abort(upload_id)
            raise

    def _request(self, operation: str, send: Any) -> Any:
        return self._t.requester.call(
            send, operation=operation, bucket=self._bucket, key=self._key, stats=self._stats
        )

    def _copy_part(self, upload_id: str, number: int, start: int, end: int) -> int:
        response = self._request(
            "UploadPartCopy",
            lambda: self._t.client.upload_part_copy(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=number,
                CopySourceRange=f"bytes={start}-{end - 1}",
                **_copy_source(self._source),
            ),
        )
        result = response["CopyPartResult"]
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": result["ETag"]}
        if self._checksum and result.get("ChecksumCRC64NVME"):
            part["ChecksumCRC64NVME"] = result["ChecksumCRC64NVME"]
        with self._lock:
            self._parts[number] = part
        self._stats.add_bytes(end - start)
        return 0

    def _complete(self, upload_id: str) -> None:
        parts = [self._parts[number] for number in sorted(self._parts)]
        # the server combines the parts' CRCs and refuses to complete if they are not the source's
        extra = (
            checksums.request_arguments("CompleteMultipartUpload", self._checksum) if self._checksum else {}
        )
        self._request(
            "CompleteMultipartUpload",
            lambda: self._t.client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                MpuObjectSize=self._source.size,
                **extra,
            ),
        )

    def _abort(self, upload_id: str) -> None:
        try:
            self._request(
                "AbortMultipartUpload",
                lambda: self._t.client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                ),
            )
        except S3Error as exc:
            logger.warning(
                "could not abort the multipart copy to s3://%s/%s (%s); its parts stay stored until "
                "abort_incomplete_uploads() or a bucket lifecycle rule removes them",
                self._bucket,
                self._key,
                exc,
            )
