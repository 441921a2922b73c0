"""Parallel ranged downloads pinned to one version of an object.

After one HEAD (size, ETag, checksum), the object is read as chunk-sized ranges in parallel, each GET
carrying ``If-Match: <etag>``: if the object is overwritten mid-download the next range fails with
412 and the download raises :class:`S3ObjectChangedError` instead of returning a mix of two versions.
Each range is written straight to its offset in the destination (a buffer or a file) and checksummed
on the way; the range CRCs combine into the object's CRC64NVME, compared with the server's when it
returned a full-object one.

Into a buffer (:class:`MemorySink`) a body is read from the socket straight into its slice of the
destination (``http.client``'s ``readinto``, under botocore's and urllib3's responses, whose own
``read``/``readinto`` return a new ``bytes`` per piece that is then copied again), and the CRC is taken
over that slice while it is still in cache. A body whose stream is not a plain ``http.client``
response (a content encoding, another urllib3) is read piece by piece as before. Either way a body
that ends early raises :class:`TruncatedBodyError` and the range is fetched again.
"""

from __future__ import annotations

import functools
import http.client
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from s3_utils import checksums
from s3_utils.errors import S3IntegrityError
from s3_utils.objects import ObjectInfo
from s3_utils.parallel import run_all
from s3_utils.retry import TruncatedBodyError
from s3_utils.stats import StatsRecorder
from s3_utils.transport import Transport

READ_BLOCK = 1024 * 1024
"""Bytes read from a response body at a time."""

_PLAIN = (None, "", "identity")
"""Content encodings under which a body's bytes on the wire are its bytes."""

WriteAt = Callable[[int, bytes], None]
"""Writes bytes at an offset of the destination."""


class MemorySink:
    """A :data:`WriteAt` into a writable buffer whose byte 0 stands at object offset ``base``.

    Ranges downloaded into it are read straight into :meth:`view` slices, not through ``bytes``.

    Args:
        target: the destination (a ``memoryview`` of bytes).
        base: the object offset of ``target[0]``.
    """

    def __init__(self, target: memoryview, base: int = 0) -> None:
        self._target = target
        self._base = base

    def __call__(self, offset: int, data: bytes) -> None:
        start = offset - self._base
        self._target[start : start + len(data)] = data

    def view(self, start: int, end: int) -> memoryview:
        """The destination bytes of object offsets ``[start, end)``."""
        return self._target[start - self._base : end - self._base]


def memory_sink(target: memoryview) -> WriteAt:
    """A :data:`WriteAt` into a writable buffer (a :class:`MemorySink` at offset 0)."""
    return MemorySink(target)


def file_sink(fd: int) -> WriteAt:
    """A :data:`WriteAt` into an open file descriptor (``pwrite``: safe from many threads)."""

    def write_at(offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    return write_at


@dataclass(frozen=True)
class RangeSource:
    """The object ranged GETs read: its URL (for messages), bucket, key, and the ETag that pins it.

    Attributes:
        url: ``s3://bucket/key``.
        bucket: the bucket.
        key: the key.
        etag: sent as ``If-Match`` when not None, so another version of the object fails with 412.
    """

    url: str
    bucket: str
    key: str
    etag: str | None


def chunk_ranges(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into ``(first, stop)`` ranges of at most ``chunk`` bytes, in order."""
    return [(first, min(first + chunk, end)) for first in range(start, end, chunk)]


def get_range(
    transport: Transport, source: RangeSource, span: tuple[int, int], write_at: WriteAt, stats: StatsRecorder
) -> int:
    """GET bytes ``span[0]`` to ``span[1] - 1`` of one object into ``write_at`` (retried as one request).

    Args:
        transport: the store's client, retry policy, settings and workers.
        source: the object, and the version to pin.
        span: the byte range ``[start, end)``; ``write_at`` receives bytes at their object offsets.
        write_at: where the bytes go.
        stats: counts bytes, requests and retries.

    Returns:
        The CRC64NVME of the range's bytes (0 when checksums are off).

    Raises:
        S3ObjectChangedError: ``etag`` no longer names the stored object.
        S3IntegrityError: the server answered another length than asked (it ignores ``Range``).
        S3Error: any other failure, after retries.
    """
    start, end = span
    checksum = transport.transfer.checksum
    url, bucket, key = source.url, source.bucket, source.key
    pin: dict[str, Any] = {"IfMatch": source.etag} if source.etag is not None else {}

    def once() -> int:
        response = transport.client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **pin
        )
        body = response["Body"]
        if int(response.get("ContentLength", -1)) != end - start:
            body.close()
            raise S3IntegrityError(
                f"{url}: asked for bytes {start}-{end - 1} and got {response.get('ContentLength')} "
                f"bytes ({response.get('ContentRange', 'no Content-Range')}); the server does not honour "
                "Range requests correctly"
            )
        try:
            if isinstance(write_at, MemorySink) and (raw := _plain_urllib3_body(response)) is not None:
                return _read_into(raw, write_at.view(start, end), checksum, url, start)
            return _read_pieces(body, write_at, span, checksum, url)
        finally:
            body.close()

    crc = transport.requester.call(once, operation="GetObject", bucket=bucket, key=key, stats=stats)
    stats.add_bytes(end - start)
    return crc


def _plain_urllib3_body(response: Mapping[str, Any]) -> Any:
    """urllib3's response under a GetObject ``response``'s body when its ``http.client`` response can be
    read directly for exactly what the body's ``read`` would return (nothing read yet, no content
    encoding); else None."""
    raw = getattr(response["Body"], "_raw_stream", None)  # botocore's attribute
    stream = getattr(raw, "_fp", None)  # urllib3's attribute
    if raw is None or not isinstance(stream, http.client.HTTPResponse):
        return None
    if response.get("ContentEncoding") not in _PLAIN or raw.tell() != 0:
        return None
    return raw


def _read_into(raw: Any, target: memoryview, checksum: bool, url: str, start: int) -> int:
    """Fill ``target`` from urllib3's response ``raw`` by ``http.client``'s ``readinto``.

    Returns:
        The CRC64NVME of the bytes (0 unless ``checksum``).

    Raises:
        TruncatedBodyError: the body ended before ``target`` was full.
    """
    stream: http.client.HTTPResponse = raw._fp
    crc = 0
    filled = 0
    while filled < len(target):
        piece = target[filled : filled + READ_BLOCK]
        count = stream.readinto(piece)
        if not count:
            raise TruncatedBodyError(
                f"{url}: range {start}-{start + len(target) - 1} ended after {filled} bytes"
            )
        if checksum:
            crc = checksums.crc(piece[:count], crc)
        filled += count
    # read to its end behind urllib3's back: hand the connection back to the pool, as urllib3 does
    # when it reads the end itself
    raw.release_conn()
    return crc


def _read_pieces(body: Any, write_at: WriteAt, span: tuple[int, int], checksum: bool, url: str) -> int:
    """Copy ``body`` to ``write_at`` one ``bytes`` piece at a time.

    Returns:
        The CRC64NVME of the bytes (0 unless ``checksum``).

    Raises:
        TruncatedBodyError: the body ended before ``span[1]``.
    """
    start, end = span
    crc = 0
    position = start
    while position < end:
        piece = body.read(min(READ_BLOCK, end - position))
        if not piece:
            raise TruncatedBodyError(f"{url}: range {start}-{end - 1} ended after {position - start} bytes")
        write_at(position, piece)
        if checksum:
            crc = checksums.crc(piece, crc)
        position += len(piece)
    return crc


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
    ranges = chunk_ranges(0, info.size, transport.transfer.chunk_size)
    source = RangeSource(info.url, info.bucket, info.key, info.etag)
    crcs = run_ranges(transport, source, ranges, write_at, stats)
    expected = info.full_object_checksum
    if transport.transfer.checksum and expected is not None:
        running = checksums.RunningChecksum()
        for (start, end), crc in zip(ranges, crcs, strict=True):
            running.append(crc, end - start)
        if running.base64 != expected:
            raise S3IntegrityError(
                f"{info.url}: CRC64NVME of the downloaded bytes is {running.base64}, the server stored "
                f"{expected}; the stored object is corrupt or was damaged in transit"
            )


def run_ranges(
    transport: Transport,
    source: RangeSource,
    ranges: list[tuple[int, int]],
    write_at: WriteAt,
    stats: StatsRecorder,
) -> list[int]:
    """:func:`get_range` for each of ``ranges`` (in parallel on the store's workers when more than one).

    Returns:
        Each range's CRC64NVME, in the order of ``ranges``.
    """
    fetches: list[Callable[[], int]] = [
        functools.partial(get_range, transport, source, span, write_at, stats) for span in ranges
    ]
    if len(fetches) == 1:
        return [fetches[0]()]
    return run_all(transport.executor, fetches)
