"""A streaming multipart writer: a write-only file whose bytes upload in parts while it is written.

The producer (e.g. ``torch.save``) fills a part-sized buffer; a full buffer becomes a part uploaded
by the store's workers while the producer fills the next one. Buffers are sent in place (no copy) and
reused by later parts once sent (:mod:`s3_utils.buffers`). At most ``max_concurrency`` parts are in
flight, so memory stays near ``(max_concurrency + 1) * part size`` and :meth:`S3Writer.write` blocks
when the uploads fall behind. Parts start at 5 MiB, so a small object's first part leaves while it is
still being written, ramp up to the chunk size and grow again much later
(:func:`~s3_utils.part_sizes.part_size`), so any object up to S3's 5 TiB fits in its 10,000 parts. A
writer told the object's expected size splits it into equal parts that upload at once instead
(:func:`~s3_utils.part_sizes.planned_part_size`); such a writer, when the plan is more than one part,
also creates the multipart upload while the first part is still being filled and fills that part in
a whole pooled buffer (not one grown as bytes come). An object of at most one first part is a single
PUT. Nothing is visible under the key until :meth:`S3Writer.close` completes the upload; any failure
aborts it.

The first S3 failure is recorded and is what the caller sees, wherever it happened: a producer such as
``torch.save`` that catches the error raised from :meth:`S3Writer.write` and raises its own (torch's
``unexpected pos`` from its zip writer) gets the S3 error back when the ``with`` block exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from types import TracebackType
from typing import TYPE_CHECKING

from s3_dirpath_utils import build_s3_url
from s3_utils import checksums
from s3_utils.buffers import BufferPool, PartBuffer, request_body
from s3_utils.errors import S3Error
from s3_utils.limits import check_object_size
from s3_utils.part_sizes import part_size, planned_part_size
from s3_utils.stats import ProgressCallback, StatsRecorder, TransferStats
from s3_utils.transport import Transport

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

_SLOT_POLL_S = 0.1
_ABORT_WAIT_S = 60.0


class S3Writer:
    """A write-only, non-seekable file object that streams to one S3 object.

    Use it as a context manager: leaving the block normally completes the upload, leaving it with an
    exception aborts it (and no object appears); if an S3 request had failed, that S3 error is raised
    instead of the exception the producer raised after it. Get one from :meth:`S3Store.open_writer`.

    Args:
        transport: the store's client, retry policy, settings and workers.
        bucket: the target bucket.
        key: the target key.
        on_progress: told the size of each part once it is stored (see :data:`ProgressCallback`).
        expected_size: about how many bytes will be written, when the producer knows (an estimate is
            fine: a wrong one costs speed, never correctness); None to ramp the parts up.

    Attributes:
        url: the target ``s3://`` URL.
        stats: the transfer's statistics, once :meth:`close` succeeded.
    """

    def __init__(
        self,
        transport: Transport,
        bucket: str,
        key: str,
        on_progress: ProgressCallback | None = None,
        expected_size: int | None = None,
    ) -> None:
        self._t = transport
        self._bucket = bucket
        self._key = key
        self.url = build_s3_url(bucket, key)
        self._chunk = transport.transfer.chunk_size
        self._planned = (
            None
            if expected_size is None
            else planned_part_size(self._chunk, expected_size, transport.transfer.max_concurrency)
        )
        # An object planned over several parts is multipart for sure: no need to wait for part 1.
        self._multipart_planned = (
            self._planned is not None and expected_size is not None and expected_size > self._planned
        )
        self._checksum = transport.transfer.checksum
        self._pool = BufferPool(transport.kept_buffers)
        self._buffer: PartBuffer | None = None
        self._filled = 0
        self._written = 0
        self._upload_id: str | None = None
        self._creating: Future[None] | None = None  # the early CreateMultipartUpload, if sent
        self._next_part = 1
        self._futures: list[Future[None]] = []
        self._parts: dict[int, tuple[str, int, int]] = {}  # part number -> (etag, crc, length)
        self._parts_lock = threading.Lock()
        self._slots = threading.Semaphore(transport.transfer.max_concurrency)
        self._failure: BaseException | None = None
        self._closed = False
        self._stats = StatsRecorder("upload", self.url, on_progress)
        self.stats: TransferStats | None = None

    # -- file protocol -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the writer was closed or aborted."""
        return self._closed

    def writable(self) -> bool:
        """Always True."""
        return True

    def readable(self) -> bool:
        """Always False."""
        return False

    def seekable(self) -> bool:
        """Always False: the bytes already sent cannot be rewritten."""
        return False

    def tell(self) -> int:
        """Bytes written so far."""
        return self._written

    def flush(self) -> None:
        """Does nothing: parts are sent as they fill; :meth:`close` sends the rest."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; blocks while ``max_concurrency`` parts are already uploading.

        Args:
            data: any bytes-like object; it is copied into a part buffer, so the caller may reuse it at
                once.

        Returns:
            The number of bytes written (all of them).

        Raises:
            ValueError: if the writer is closed.
            S3ConfigError: if the object would grow past S3's 5 TiB (the upload is then aborted).
            S3Error: if an earlier part failed for good (the upload is then aborted).
        """
        if self._closed:
            raise ValueError(f"write to a closed S3Writer for {self.url}")
        try:
            self._raise_if_failed()
            view = memoryview(data).cast("B")
            total = len(view)
            check_object_size(self._written + total, self.url)
            if total and self._multipart_planned and self._creating is None and self._upload_id is None:
                self._creating = self._submit(self._create_upload)
            self._append(view)
        except S3Error as exc:
            self._record(exc)
            self.abort()
            raise
        self._written += total
        return total

    def _append(self, view: memoryview) -> None:
        total = len(view)
        offset = 0
        while offset < total:
            capacity = part_size(self._chunk, self._next_part, self._planned)
            if self._filled == capacity:
                self._send()  # a full part, and more bytes follow: it is not the last part
                continue
            if self._buffer is None:
                # The first part grows as bytes come (a small object never takes a whole chunk),
                # unless the plan has several parts; later ones are multipart for sure: a whole
                # part, reused from a sent one if any.
                growing = self._next_part == 1 and not self._multipart_planned
                self._buffer = bytearray() if growing else self._pool.take(capacity)
            take = min(capacity - self._filled, total - offset)
            self._buffer[self._filled : self._filled + take] = view[offset : offset + take]
            self._filled += take
            offset += take

    def close(self) -> None:
        """Send what is left and complete the upload; the object appears only now.

        Closing an already closed writer does nothing.

        Raises:
            S3Error: if any part or the completion failed; the upload is aborted and no object appears.
        """
        if self._closed:
            return
        try:
            self._raise_if_failed()
            self._wait_for_upload_id()
            if self._upload_id is None:
                self._put_single()
            else:
                self._send()
                self._wait_for_parts()
                self._raise_if_failed()
                self._complete()
        except BaseException as exc:
            if isinstance(exc, S3Error):
                self._record(exc)
            self.abort()
            raise
        self._closed = True
        self._pool.clear()  # a writer kept for its stats holds no part buffers; its store keeps some
        self.stats = self._stats.finish(self._t.subscribers)

    def abort(self) -> None:
        """Stop: cancel queued parts, wait for running ones, and abort the multipart upload.

        Never raises for a failed abort (it is logged; :meth:`S3Store.abort_incomplete_uploads` cleans
        up later). Calling it on a closed writer does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._buffer = None
        self._pool.clear()
        # Cancel what has not started; wait for the rest (wait() never counts a cancelled future
        # whose executor has shut down as done, so those are left out). An early create still
        # running sets the upload id this abort then aborts.
        running = [f for f in [*self._futures, self._creating] if f is not None and not f.cancel()]
        wait(running, timeout=_ABORT_WAIT_S)
        if self._upload_id is None:
            return
        upload_id = self._upload_id
        try:
            self._t.requester.call(
                lambda: self._t.client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=upload_id
                ),
                operation="AbortMultipartUpload",
                bucket=self._bucket,
                key=self._key,
            )
            logger.debug("aborted multipart upload of %s", self.url)
        except S3Error as exc:
            logger.warning(
                "could not abort the multipart upload of %s (%s); its parts stay stored until "
                "abort_incomplete_uploads() or a bucket lifecycle rule removes them",
                self.url,
                exc,
            )

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        self.abort()
        failure = self._failure
        if failure is not None and failure is not exc and isinstance(exc, Exception):
            # The producer failed because an S3 request did (torch.save turns the error raised from
            # write() into its own zip-writer error): raise the cause, not the symptom. The
            # producer's exception stays attached as __context__.
            raise failure

    def __repr__(self) -> str:
        return f"S3Writer({self.url!r}, written={self._written}, closed={self._closed})"

    # -- internals -----------------------------------------------------------------------------------

    def _record(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            failure = self._failure
            self.abort()
            raise failure

    def _send(self) -> None:
        """Send the filled buffer as the next part once a slot is free, so at most
        ``max_concurrency`` parts are in flight and ``max_concurrency + 1`` buffers exist."""
        part_number = self._next_part
        while not self._slots.acquire(timeout=_SLOT_POLL_S):
            self._raise_if_failed()
        try:
            self._raise_if_failed()
            self._wait_for_upload_id()
            if self._upload_id is None:
                self._create_upload()
            buffer, length = self._take_buffer()
            future = self._submit(self._upload_part, part_number, buffer, length)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._part_done)
        self._futures.append(future)
        self._next_part += 1

    def _submit(self, task: Callable[..., None], *args: object) -> Future[None]:
        try:
            return self._t.executor.submit(task, *args)
        except RuntimeError:  # the executor was shut down
            raise S3Error(f"{self.url}: the S3Store was closed while this writer was open") from None

    def _wait_for_upload_id(self) -> None:
        """Let the early CreateMultipartUpload finish; its failure is raised here, as the S3 error."""
        creating, self._creating = self._creating, None
        if creating is not None:
            creating.result()

    def _take_buffer(self) -> tuple[PartBuffer, int]:
        buffer, length = self._buffer if self._buffer is not None else bytearray(), self._filled
        self._buffer = None
        self._filled = 0
        return buffer, length

    def _part_done(self, future: Future[None]) -> None:
        if future.cancelled():
            self._slots.release()  # never ran, so _upload_part did not release it
        else:
            failure = future.exception()
            if failure is not None:
                self._record(failure)

    def _create_upload(self) -> None:
        extra = checksums.request_arguments("CreateMultipartUpload") if self._checksum else {}
        response = self._t.requester.call(
            lambda: self._t.client.create_multipart_upload(Bucket=self._bucket, Key=self._key, **extra),
            operation="CreateMultipartUpload",
            bucket=self._bucket,
            key=self._key,
            stats=self._stats,
        )
        self._upload_id = response["UploadId"]

    def _upload_part(self, part_number: int, buffer: PartBuffer, length: int) -> None:
        # The buffer goes back to the pool before the slot is freed: buffers never outnumber slots + 1.
        try:
            self._send_part(part_number, memoryview(buffer)[:length])
        finally:
            if not self._closed:
                self._pool.give_back(buffer)
            self._slots.release()

    def _send_part(self, part_number: int, body: memoryview) -> None:
        if self._closed or self._failure is not None:
            return  # the upload is being aborted; do not send more
        upload_id = self._upload_id
        assert upload_id is not None
        crc = checksums.crc(body) if self._checksum else 0
        extra = checksums.request_arguments("UploadPart", crc) if self._checksum else {}
        response = self._t.requester.call(
            lambda: self._t.client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=request_body(body),
                **extra,
            ),
            operation="UploadPart",
            bucket=self._bucket,
            key=self._key,
            stats=self._stats,
        )
        length = len(body)
        with self._parts_lock:
            self._parts[part_number] = (response["ETag"], crc, length)
        self._stats.add_bytes(length)

    def _wait_for_parts(self) -> None:
        pending = [f for f in self._futures if not f.done()]
        while pending:
            _, not_done = wait(pending, timeout=_SLOT_POLL_S)
            if self._failure is not None:
                return
            pending = list(not_done)

    def _complete(self) -> None:
        upload_id = self._upload_id
        assert upload_id is not None
        missing = sorted(set(range(1, self._next_part)) - set(self._parts))
        if missing:  # cancelled, e.g. by S3Store.close(): completing would store an object with holes
            raise S3Error(
                f"{self.url}: parts {missing[:5]} were never uploaded (was the store closed while "
                "writing?); the upload is aborted"
            )
        running = checksums.RunningChecksum()
        parts: list[CompletedPartTypeDef] = []
        for number in sorted(self._parts):
            etag, crc, length = self._parts[number]
            part: CompletedPartTypeDef = {"PartNumber": number, "ETag": etag}
            if self._checksum:
                part["ChecksumCRC64NVME"] = checksums.to_base64(crc)
                running.append(crc, length)
            parts.append(part)
        extra = (
            checksums.request_arguments("CompleteMultipartUpload", running.base64) if self._checksum else {}
        )
        self._t.requester.call(
            lambda: self._t.client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                MpuObjectSize=self._written,
                **extra,
            ),
            operation="CompleteMultipartUpload",
            bucket=self._bucket,
            key=self._key,
            stats=self._stats,
        )
        self._upload_id = None  # completed: nothing left to abort
        logger.debug("completed %s in %d parts", self.url, len(parts))

    def _put_single(self) -> None:
        buffer, length = self._take_buffer()
        body = memoryview(buffer)[:length]
        extra = checksums.request_arguments("PutObject", checksums.crc(body)) if self._checksum else {}
        self._t.requester.call(
            lambda: self._t.client.put_object(
                Bucket=self._bucket, Key=self._key, Body=request_body(body), **extra
            ),
            operation="PutObject",
            bucket=self._bucket,
            key=self._key,
            stats=self._stats,
        )
        self._stats.add_bytes(len(body))
