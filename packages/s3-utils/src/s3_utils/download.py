"""Parallel ranged downloads pinned to one version of an object.

After one HEAD (size, ETag, checksum), the object is read as chunk-sized ranges in parallel, each GET
carrying ``If-Match: <etag>``: if the object is overwritten mid-download the next range fails with
412 and the download raises :class:`S3ObjectChangedError` instead of returning a mix of two versions.
Each range is written straight to its offset in the destination (a buffer or a file) and checksummed
on the way; the range CRCs combine into the object's CRC64NVME, compared with the server's when it
returned a full-object one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, wait

from s3_utils import checksums
from s3_utils.errors import S3IntegrityError
from s3_utils.objects import ObjectInfo
from s3_utils.retry import TruncatedBodyError
from s3_utils.stats import StatsRecorder
from s3_utils.transport import Transport

READ_BLOCK = 1024 * 1024
"""Bytes read from a response body at a time."""

WriteAt = Callable[[int, bytes], None]
"""Writes bytes at an offset of the destination."""


def memory_sink(target: memoryview) -> WriteAt:
    """A :data:`WriteAt` into a writable buffer."""

    def write_at(offset: int, data: bytes) -> None:
        target[offset : offset + len(data)] = data

    return write_at


def file_sink(fd: int) -> WriteAt:
    """A :data:`WriteAt` into an open file descriptor (``pwrite``: safe from many threads)."""

    def write_at(offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    return write_at


def ranged_download(transport: Transport, info: ObjectInfo, write_at: WriteAt, stats: StatsRecorder) -> None:
    """Download ``info``'s object into ``write_at`` with parallel ranged GETs.

    Args:
        transport: the store's client, retry policy, settings and workers.
        info: the HEAD result; its ETag pins the version read.
        write_at: where the bytes go.
        stats: counts bytes, requests and retries.

    Raises:
        S3ObjectChangedError: the object was overwritten during the download.
        S3IntegrityError: the bytes do not match the server's full-object CRC64NVME.
        S3Error: any other failure, after retries.
    """
    chunk = transport.transfer.chunk_size
    ranges = [(start, min(start + chunk, info.size)) for start in range(0, info.size, chunk)]
    checksum = transport.transfer.checksum

    def fetch(start: int, end: int) -> int:
        def once() -> int:
            response = transport.client.get_object(
                Bucket=info.bucket, Key=info.key, Range=f"bytes={start}-{end - 1}", IfMatch=info.etag
            )
            body = response["Body"]
            if int(response.get("ContentLength", -1)) != end - start:
                body.close()
                raise S3IntegrityError(
                    f"{info.url}: asked for bytes {start}-{end - 1} and got {response.get('ContentLength')} "
                    f"bytes ({response.get('ContentRange', 'no Content-Range')}); the server does not honour "
                    "Range requests correctly"
                )
            crc = 0
            position = start
            try:
                while position < end:
                    piece = body.read(min(READ_BLOCK, end - position))
                    if not piece:
                        raise TruncatedBodyError(
                            f"{info.url}: range {start}-{end - 1} ended after {position - start} bytes"
                        )
                    write_at(position, piece)
                    if checksum:
                        crc = checksums.crc(piece, crc)
                    position += len(piece)
            finally:
                body.close()
            return crc

        crc = transport.requester.call(
            once, operation="GetObject", bucket=info.bucket, key=info.key, stats=stats
        )
        stats.add_bytes(end - start)
        return crc

    if len(ranges) == 1:
        crcs = [fetch(*ranges[0])]
    else:
        crcs = _run_all(transport, [functools.partial(fetch, start, end) for start, end in ranges])
    expected = info.full_object_checksum
    if checksum and expected is not None:
        running = checksums.RunningChecksum()
        for (start, end), crc in zip(ranges, crcs, strict=True):
            running.append(crc, end - start)
        if running.base64 != expected:
            raise S3IntegrityError(
                f"{info.url}: CRC64NVME of the downloaded bytes is {running.base64}, the server stored "
                f"{expected}; the stored object is corrupt or was damaged in transit"
            )


def _run_all(transport: Transport, tasks: list[Callable[[], int]]) -> list[int]:
    """Run ``tasks`` on the store's workers; on the first failure cancel the rest and raise it."""
    futures: list[Future[int]] = [transport.executor.submit(task) for task in tasks]
    wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
    if failed is not None:
        for future in futures:
            future.cancel()
        wait([f for f in futures if not f.cancelled()])  # a cancelled one may never count as done
        error = failed.exception()
        assert error is not None
        raise error
    return [future.result() for future in futures]
