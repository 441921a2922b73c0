"""``S3Store``: the one object the upper layers use to move checkpoints to and from S3.

It holds the shared client (one per configuration and process), the retry policy, and a pool of
worker threads it owns and stops in :meth:`S3Store.close`. URLs are parsed once here, at the edge;
everything below speaks ``(bucket, key)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from s3_dirpath_utils import build_s3_url, parse_s3_url
from s3_utils import checksums
from s3_utils.buffers import KeptBuffers
from s3_utils.client import get_client, pool_size
from s3_utils.config import S3ClientConfig, TransferConfig
from s3_utils.copies import copy_refused, server_copy
from s3_utils.download import (
    MemorySink,
    RangeSource,
    chunk_ranges,
    file_sink,
    memory_sink,
    ranged_download,
    run_ranges,
)
from s3_utils.errors import S3ConfigError, S3Error, S3NotFoundError, S3ObjectChangedError
from s3_utils.limits import MAX_COPY_OBJECT_SIZE, MAX_KEYS_PER_DELETE, RequestClass, check_object_size
from s3_utils.local_files import file_replacing
from s3_utils.objects import ObjectInfo
from s3_utils.request_rate import node_share, process_limiter, request_prefix
from s3_utils.retry import Requester
from s3_utils.stats import ProgressCallback, StatsRecorder, TransferStats, TransferSubscriber
from s3_utils.transport import Transport
from s3_utils.writer import S3Writer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

logger = logging.getLogger(__name__)

WritableBuffer = bytearray | memoryview
"""What a download can write into (wrap an ``mmap`` or other buffer in a ``memoryview``)."""

_COPY_BLOCK = 8 * 1024 * 1024


def split_url(url: str | os.PathLike[str]) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URL.

    Raises:
        S3ConfigError: naming the URL and what is wrong with it.
    """
    try:
        return parse_s3_url(url)
    except ValueError as exc:
        raise S3ConfigError(str(exc)) from None


def _object_url(url: str | os.PathLike[str]) -> tuple[str, str]:
    bucket, key = split_url(url)
    if not key or key.endswith("/"):
        raise S3ConfigError(f"{os.fspath(url)!r} names no object: expected 's3://bucket/key' with a key")
    return bucket, key


class S3Store:
    """Transfers, listing and deletes against one S3 endpoint.

    Thread-safe: one store may serve many threads. Use it as a context manager, or call
    :meth:`close`, to stop its worker threads.

    Args:
        client_config: where S3 is; :meth:`S3ClientConfig.from_env` by default.
        transfer_config: part size, concurrency, retries, checksums.
        subscribers: called with the :class:`TransferStats` of every finished transfer.
    """

    def __init__(
        self,
        client_config: S3ClientConfig | None = None,
        transfer_config: TransferConfig | None = None,
        subscribers: Sequence[TransferSubscriber] = (),
    ) -> None:
        self.client_config = client_config if client_config is not None else S3ClientConfig.from_env()
        self.transfer_config = transfer_config if transfer_config is not None else TransferConfig()
        self._subscribers = tuple(subscribers)
        self._requester = Requester(self.transfer_config, self.client_config.endpoint_name)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid = 0
        self._kept_buffers = KeptBuffers()
        self._closed = False

    def __repr__(self) -> str:
        return f"S3Store({self.client_config!r}, {self.transfer_config!r})"

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """The shared boto3 client for this store's configuration in this process."""
        return get_client(
            self.client_config, pool_size(self.client_config, self.transfer_config.max_concurrency)
        )

    def _transport(self) -> Transport:
        with self._lock:
            if self._closed:
                raise S3Error("this S3Store is closed; create a new one")
            if self._executor is None or self._executor_pid != os.getpid():
                # A forked child inherits the executor object but none of its threads: start afresh.
                self._executor = ThreadPoolExecutor(
                    max_workers=self.transfer_config.max_concurrency, thread_name_prefix="s3-utils"
                )
                self._executor_pid = os.getpid()
                self._kept_buffers = KeptBuffers()  # nor a lock another thread may have held
            executor, kept_buffers = self._executor, self._kept_buffers
        return Transport(
            self.client, self._requester, self.transfer_config, executor, self._subscribers, kept_buffers
        )

    def close(self) -> None:
        """Stop the worker threads (waiting for running requests) and drop the kept part buffers. Safe to
        call twice."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            kept, self._kept_buffers = self._kept_buffers, KeptBuffers()
        if self._executor_pid == os.getpid():  # a forked child has neither the threads nor the locks' owners
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            # after the running writers closed; one kept for its stats holds these through its transport
            kept.clear()

    def __enter__(self) -> S3Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Any, operation: str, bucket: str, key: str | None) -> Any:
        return self._requester.call(fn, operation=operation, bucket=bucket, key=key)

    # -- request rates -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def share_prefix(
        self,
        url: str | os.PathLike[str],
        writers: int,
        local_writers: int,
        request_class: RequestClass = "PUT",
    ) -> Iterator[None]:
        """Within the block, pace this machine's ``request_class`` requests under ``url``'s prefix (its
        parent "directory") to its fair share: the store's per-prefix rate
        (:meth:`S3ClientConfig.requests_per_prefix_per_s`) times ``local_writers / writers``
        (:func:`~s3_utils.request_rate.node_share`). Every local writer enters its own block with the
        same counts; SlowDown still lowers the rate (AIMD). Does nothing when the transfer config has
        ``adaptive_request_rate=False``.

        Args:
            url: an object under the shared prefix, ``s3://bucket/prefix/name``.
            writers: the ranks of the job (every machine) writing under the prefix meanwhile.
            local_writers: those of them on this machine (sharing its request-rate table:
                :func:`~s3_utils.request_rate.sharing_group`).
            request_class: ``"PUT"`` (writes) or ``"GET"`` (reads).

        Raises:
            S3ConfigError: if ``url`` is not an object URL.
            ValueError: unless ``1 <= local_writers <= writers``.
        """
        bucket, key = _object_url(url)
        rate = node_share(self.client_config.requests_per_prefix_per_s(request_class), writers, local_writers)
        if not self.transfer_config.adaptive_request_rate:
            yield
            return
        limiter, prefix = process_limiter(), request_prefix(bucket, key)
        limiter.share(prefix, request_class, rate)
        try:
            yield
        finally:
            limiter.release(prefix, request_class)

    # -- uploads -------------------------------------------------------------------------------------

    def open_writer(
        self,
        url: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
        *,
        expected_size: int | None = None,
    ) -> S3Writer:
        """A streaming writer for ``url``; the object appears when the writer closes successfully.

        Args:
            url: the target ``s3://bucket/key``.
            on_progress: told the size of each part once it is stored (:data:`ProgressCallback`).
            expected_size: about how many bytes will be written, if known: the parts are then equal
                and upload at once (:func:`~s3_utils.part_sizes.planned_part_size`).

        Raises:
            S3ConfigError: if ``url`` is not an object URL.
        """
        bucket, key = _object_url(url)
        return S3Writer(self._transport(), bucket, key, on_progress, expected_size)

    def upload_stream(
        self,
        stream: IO[bytes],
        url: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
        *,
        expected_size: int | None = None,
    ) -> TransferStats:
        """Upload everything readable from ``stream`` (from its current position) to ``url``.

        Args:
            stream: a readable binary file object.
            url: the target ``s3://bucket/key``.
            on_progress: told the size of each part once it is stored (:data:`ProgressCallback`).
            expected_size: about how many bytes the stream holds, if known (see :meth:`open_writer`).

        Returns:
            The transfer's statistics.

        Raises:
            S3Error: on failure; no object (or the previous one, untouched) is left at ``url``.
        """
        with self.open_writer(url, on_progress, expected_size=expected_size) as writer:
            shutil.copyfileobj(stream, writer, _COPY_BLOCK)
        assert writer.stats is not None
        return writer.stats

    def upload_bytes(
        self,
        url: str | os.PathLike[str],
        data: bytes | bytearray | memoryview,
        on_progress: ProgressCallback | None = None,
    ) -> TransferStats:
        """Upload ``data`` to ``url``.

        Args:
            url: the target ``s3://bucket/key``.
            data: the object's bytes.
            on_progress: told the size of each part once it is stored (:data:`ProgressCallback`).

        Returns:
            The transfer's statistics.

        Raises:
            S3Error: on failure; nothing is left at ``url``.
        """
        with self.open_writer(url, on_progress, expected_size=memoryview(data).nbytes) as writer:
            writer.write(data)
        assert writer.stats is not None
        return writer.stats

    def upload_file(
        self,
        path: str | os.PathLike[str],
        url: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
    ) -> TransferStats:
        """Upload the local file at ``path`` to ``url``.

        Args:
            path: the local file.
            url: the target ``s3://bucket/key``.
            on_progress: told the size of each part once it is stored (:data:`ProgressCallback`).

        Returns:
            The transfer's statistics.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            S3Error: on failure; nothing is left at ``url``.
        """
        size = os.path.getsize(path)
        check_object_size(size, self._url_of(url))
        with open(path, "rb") as stream:
            return self.upload_stream(stream, url, on_progress, expected_size=size)

    def put_if_unchanged(
        self, url: str | os.PathLike[str], data: bytes | bytearray | memoryview, *, expected_etag: str | None
    ) -> str:
        """Store ``data`` at ``url`` in one PutObject, only if the object there is still the version the
        caller read: ``If-Match: expected_etag``, or ``If-None-Match: *`` (no object yet) when None.

        Two writers that read the same version cannot both replace it: the second gets
        :class:`S3ObjectChangedError`. A retried PUT whose first attempt had in fact succeeded is
        recognised (the stored ETag is the MD5 of ``data``) and not reported as a conflict. The store
        must support conditional writes (AWS S3, moto, ...); one that ignores the headers writes
        unconditionally.

        Args:
            url: the object.
            data: its new content (at most 5 GiB: one PUT).
            expected_etag: the ETag (with its quotes) of the version to replace; None to create only.

        Returns:
            The new object's ETag.

        Raises:
            S3ObjectChangedError: another writer created or replaced the object since it was read.
            S3Error: on any other failure, after retries.
        """
        bucket, key = _object_url(url)
        body = bytes(data)
        condition: dict[str, Any] = (
            {"IfNoneMatch": "*"} if expected_etag is None else {"IfMatch": expected_etag}
        )
        checksum = self.transfer_config.checksum
        extra = checksums.request_arguments("PutObject", checksums.crc(body)) if checksum else {}
        try:
            response = self._call(
                lambda: self.client.put_object(Bucket=bucket, Key=key, Body=body, **condition, **extra),
                "PutObject",
                bucket,
                key,
            )
        except S3Error as error:
            if not isinstance(error, S3ObjectChangedError) and error.code != "ConditionalRequestConflict":
                raise
            ours = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
            try:
                if self.head(url).etag == ours:
                    return ours  # an earlier attempt of this PUT stored it; its answer was lost
            except S3NotFoundError:
                pass
            what = "exists now" if expected_etag is None else f"is no longer the version {expected_etag}"
            raise S3ObjectChangedError(
                f"{self._url_of(url)} {what}: another writer created or replaced it meanwhile, so this "
                "write was refused; check that only one job writes there",
                operation="PutObject",
                status=412,
                code="PreconditionFailed",
                bucket=bucket,
                key=key,
            ) from error
        return str(response["ETag"])

    # -- downloads -----------------------------------------------------------------------------------

    def head(self, url: str | os.PathLike[str]) -> ObjectInfo:
        """Size, ETag, modification time and (when the server keeps one) checksum of an object.

        Raises:
            S3NotFoundError: naming the missing bucket or key.
            S3Error: on any other failure.
        """
        return self._head(url, None)

    def _head(self, url: str | os.PathLike[str], stats: StatsRecorder | None) -> ObjectInfo:
        bucket, key = _object_url(url)
        extra: dict[str, Any] = {"ChecksumMode": "ENABLED"} if self.transfer_config.checksum else {}
        try:
            response = self._requester.call(
                lambda: self.client.head_object(Bucket=bucket, Key=key, **extra),
                operation="HeadObject",
                bucket=bucket,
                key=key,
                stats=stats,
            )
        except S3NotFoundError as error:
            self._raise_if_no_bucket(bucket, error)
            raise
        return ObjectInfo(
            url=build_s3_url(bucket, key),
            bucket=bucket,
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]),
            last_modified=response.get("LastModified"),
            checksum_crc64nvme=response.get("ChecksumCRC64NVME"),
            checksum_type=response.get("ChecksumType"),
        )

    def _raise_if_no_bucket(self, bucket: str, error: S3NotFoundError) -> None:
        """A HEAD's 404 does not say whether the bucket or the key is missing: unless this store has
        already reached the bucket (then the key is what is missing, no request needed), ask it."""
        if error.code == "NoSuchBucket":
            raise error
        if self._requester.bucket_seen(bucket):
            return
        try:
            self._call(lambda: self.client.head_bucket(Bucket=bucket), "HeadBucket", bucket, None)
        except S3NotFoundError:
            pass
        except S3Error:
            return  # cannot tell (e.g. no s3:ListBucket permission): the key's own error stands
        else:
            return
        raise S3NotFoundError(
            f"bucket {bucket!r} does not exist at {self.client_config.endpoint_name}; check the bucket "
            "name and the endpoint",
            operation="HeadBucket",
            status=404,
            code="NoSuchBucket",
            bucket=bucket,
        )

    def download_into(
        self,
        url: str | os.PathLike[str],
        buffer: bytearray | memoryview,
        on_progress: ProgressCallback | None = None,
    ) -> int:
        """Download ``url`` into the start of ``buffer`` (a writable bytes-like at least as large).

        Args:
            url: the object's ``s3://bucket/key``.
            buffer: where the bytes go.
            on_progress: told the size of each range once it has arrived (:data:`ProgressCallback`).

        Returns:
            The object's size (bytes written).

        Raises:
            S3ConfigError: if ``buffer`` is too small or read-only.
            S3ObjectChangedError: if the object was overwritten meanwhile.
            S3IntegrityError: if the bytes do not match the stored checksum.
        """
        return self.download_to(url, lambda info: buffer, on_progress).size

    def download_to(
        self,
        url: str | os.PathLike[str],
        allocate: Callable[[ObjectInfo], WritableBuffer],
        on_progress: ProgressCallback | None = None,
    ) -> ObjectInfo:
        """Download ``url`` into a buffer that ``allocate`` provides once the object's size is known.

        One HEAD, then ``allocate(info)``, then parallel ranged GETs into the buffer it returns: the
        caller decides where the bytes live (a ``bytearray``, an ``mmap`` of an in-memory file, ...).

        Args:
            url: the object's ``s3://bucket/key``.
            allocate: returns a writable buffer of at least ``info.size`` bytes.
            on_progress: told the size of each range once it has arrived (:data:`ProgressCallback`).

        Returns:
            The object's metadata (size, ETag) as the HEAD saw it.

        Raises:
            S3NotFoundError: if the bucket or object does not exist.
            S3ConfigError: if the buffer is smaller than the object or read-only.
            S3ObjectChangedError: if the object was overwritten meanwhile.
            S3IntegrityError: if the bytes do not match the stored checksum.
        """
        stats = StatsRecorder("download", self._url_of(url), on_progress)
        info = self._head(url, stats)
        target = memoryview(allocate(info)).cast("B")
        if target.readonly or len(target) < info.size:
            raise S3ConfigError(
                f"{info.url} is {info.size} bytes; the buffer given is {len(target)} bytes"
                f"{' and read-only' if target.readonly else ''}: pass a writable buffer of at least "
                f"{info.size} bytes"
            )
        ranged_download(self._transport(), info, memory_sink(target), stats)
        stats.finish(self._subscribers)
        return info

    def download_range(
        self,
        url: str | os.PathLike[str],
        offset: int,
        buffer: WritableBuffer,
        *,
        etag: str | None = None,
    ) -> int:
        """Download ``len(buffer)`` bytes of ``url`` starting at byte ``offset`` into ``buffer``.

        No HEAD: the span is cut into chunk-sized ranged GETs (parallel when more than one), each
        retried alone. Pass the ``etag`` of the version you expect (from :meth:`head` or a listing) to
        pin every GET to it with ``If-Match``. S3 stores no checksum of an arbitrary span, so the bytes
        are checked for length only; use :meth:`download_to` for a whole object checked end to end.

        Args:
            url: the object.
            offset: the first byte to read.
            buffer: a writable bytes-like; its length is the number of bytes read.
            etag: the version to read (with its quotes, as S3 sends it); None reads whatever is stored.

        Returns:
            The number of bytes written (``len(buffer)``).

        Raises:
            S3ConfigError: if ``buffer`` is read-only or ``offset`` is negative.
            S3NotFoundError: if the bucket or object does not exist.
            S3ObjectChangedError: if ``etag`` is given and the object is no longer that version.
            S3IntegrityError: if the span lies (partly) past the object's end (the server sends fewer
                bytes than asked).
        """
        bucket, key = _object_url(url)
        target = memoryview(buffer).cast("B")
        if target.readonly or offset < 0:
            raise S3ConfigError(
                f"download_range of {self._url_of(url)}: pass a writable buffer and an offset >= 0 (got "
                f"offset {offset}{', a read-only buffer' if target.readonly else ''})"
            )
        end = offset + len(target)
        stats = StatsRecorder("download", build_s3_url(bucket, key))

        ranges = chunk_ranges(offset, end, self.transfer_config.chunk_size)
        sink = MemorySink(target, base=offset)
        run_ranges(self._transport(), RangeSource(stats.url, bucket, key, etag), ranges, sink, stats)
        stats.finish(self._subscribers)
        return len(target)

    @staticmethod
    def _url_of(url: str | os.PathLike[str]) -> str:
        return build_s3_url(*_object_url(url))

    def download_bytes(
        self, url: str | os.PathLike[str], on_progress: ProgressCallback | None = None
    ) -> bytearray:
        """Download ``url`` into a new ``bytearray``.

        Args:
            url: the object's ``s3://bucket/key``.
            on_progress: told the size of each range once it has arrived (:data:`ProgressCallback`).

        Raises:
            S3NotFoundError: if the bucket or object does not exist.
            S3ObjectChangedError: if the object was overwritten meanwhile.
            S3IntegrityError: if the bytes do not match the stored checksum.
        """
        made: list[bytearray] = []

        def allocate(info: ObjectInfo) -> bytearray:
            made.append(bytearray(info.size))
            return made[0]

        self.download_to(url, allocate, on_progress)
        return made[0]

    def download_file(
        self,
        url: str | os.PathLike[str],
        path: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
    ) -> TransferStats:
        """Download ``url`` to the local ``path``, atomically: a partial file never appears there.

        Ranges are written into a temporary file beside ``path``, renamed over it on success and
        deleted on failure.

        Args:
            url: the object's ``s3://bucket/key``.
            path: the local file to create or replace.
            on_progress: told the size of each range once it has arrived (:data:`ProgressCallback`).

        Returns:
            The transfer's statistics.

        Raises:
            S3NotFoundError: if the bucket or object does not exist.
            S3ObjectChangedError: if the object was overwritten meanwhile.
            S3IntegrityError: if the bytes do not match the stored checksum.
        """
        stats = StatsRecorder("download", self._url_of(url), on_progress)
        info = self._head(url, stats)
        with file_replacing(path) as fd:
            os.ftruncate(fd, info.size)
            ranged_download(self._transport(), info, file_sink(fd), stats)
        return stats.finish(self._subscribers)

    # -- copies --------------------------------------------------------------------------------------

    def copy(
        self,
        src_url: str | os.PathLike[str],
        dst_url: str | os.PathLike[str],
        on_progress: ProgressCallback | None = None,
        *,
        single_request_limit: int = MAX_COPY_OBJECT_SIZE,
    ) -> TransferStats:
        """Copy the object at ``src_url`` to ``dst_url`` inside S3: the bytes do not pass through here.

        The target appears whole or not at all (the previous object there stays until then): up to
        ``single_request_limit`` bytes one CopyObject, above it a multipart upload of UploadPartCopy
        parts, completed once every part is copied and aborted otherwise. Each request is pinned to the
        source's ETag, and its CRC64NVME is carried over and checked (see :mod:`s3_utils.copies`).

        A store that refuses server-side copies (501 NotImplemented, 405, 403 AccessDenied on the copy
        request) gets the bytes moved through this client instead: parallel ranged GETs into a
        temporary file, then an upload from it (local disk for one object, memory bounded as usual).

        Args:
            src_url: the source ``s3://bucket/key``.
            dst_url: the target ``s3://bucket/key``.
            on_progress: told the bytes copied (or, when moved through the client, uploaded), part by
                part (:data:`ProgressCallback`).
            single_request_limit: the largest object copied with a single CopyObject; S3's 5 GiB
                (:data:`~s3_utils.limits.MAX_COPY_OBJECT_SIZE`) unless a test wants parts.

        Returns:
            The transfer's statistics; ``operation`` is ``"copy"`` for a server-side copy and
            ``"upload"`` when the store refused it and the bytes went through the client.

        Raises:
            S3NotFoundError: if the source does not exist.
            S3ObjectChangedError: if the source was overwritten during the copy.
            S3Error: on any other failure; nothing new is left at ``dst_url``.
        """
        bucket, key = _object_url(dst_url)
        stats = StatsRecorder("copy", build_s3_url(bucket, key), on_progress)
        source = self._head(src_url, stats)
        try:
            server_copy(
                self._transport(), source, bucket, key, stats, single_request_limit=single_request_limit
            )
        except S3Error as error:
            if not copy_refused(error):
                raise
            logger.info(
                "%s refused a server-side copy (%s %s); copying %s through this client",
                self.client_config.endpoint_name,
                error.code,
                error.status,
                source.url,
            )
            return self._copy_through_client(source, dst_url, on_progress)
        return stats.finish(self._subscribers)

    def _copy_through_client(
        self, source: ObjectInfo, dst_url: str | os.PathLike[str], on_progress: ProgressCallback | None
    ) -> TransferStats:
        with tempfile.TemporaryDirectory(prefix="s3-utils-copy-") as folder:
            path = os.path.join(folder, "object")
            self.download_file(source.url, path)  # one version of the source, whole (ETag-pinned)
            return self.upload_file(path, dst_url, on_progress)

    # -- listing -------------------------------------------------------------------------------------

    def exists(self, url: str | os.PathLike[str], match_directory: bool = False) -> bool:
        """Whether an object exists at ``url``; with ``match_directory``, also whether any object lies
        under ``url`` as a directory (``url`` + ``/`` as a prefix).

        A missing key costs one HEAD once this store has reached the bucket (any earlier request on
        it); before that, a HeadBucket tells a missing bucket from a missing key.

        Raises:
            S3NotFoundError: if the bucket does not exist.
            S3Error: on any other failure.
        """
        bucket, key = split_url(url)
        if key and not key.endswith("/"):
            try:
                self._call(lambda: self.client.head_object(Bucket=bucket, Key=key), "HeadObject", bucket, key)
                return True
            except S3NotFoundError as error:
                self._raise_if_no_bucket(bucket, error)
        if not match_directory:
            return False
        prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
        response = self._call(
            lambda: self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1),
            "ListObjectsV2",
            bucket,
            prefix,
        )
        return bool(response.get("KeyCount", 0))

    def iter_objects(self, prefix_url: str | os.PathLike[str]) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix_url``'s key, page by page (up to 1,000 keys each).

        The prefix is a plain string prefix: ``s3://b/ckpt`` also matches ``s3://b/ckpt2/x``; end it
        with ``/`` to list one directory.

        Raises:
            S3NotFoundError: if the bucket does not exist.
        """
        bucket, prefix = split_url(prefix_url)
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = self._call(
                lambda extra=extra: self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, **extra),
                "ListObjectsV2",
                bucket,
                prefix,
            )
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    url=build_s3_url(bucket, item["Key"]),
                    bucket=bucket,
                    key=item["Key"],
                    size=int(item.get("Size", 0)),
                    etag=str(item.get("ETag", "")),
                    last_modified=item.get("LastModified"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    # -- deletes -------------------------------------------------------------------------------------

    def delete(self, url: str | os.PathLike[str]) -> None:
        """Delete the object at ``url`` (deleting a missing key is not an error, as in S3).

        Raises:
            S3NotFoundError: if the bucket does not exist.
        """
        bucket, key = _object_url(url)
        self._call(lambda: self.client.delete_object(Bucket=bucket, Key=key), "DeleteObject", bucket, key)

    def delete_prefix(self, prefix_url: str | os.PathLike[str]) -> int:
        """Delete every object under ``prefix_url`` in batches of S3's maximum of 1,000 keys per request.

        Returns:
            How many objects were deleted.

        Raises:
            S3ConfigError: if the prefix is empty (refusing to empty a whole bucket by accident).
            S3Error: naming the first keys S3 refused to delete.
        """
        bucket, prefix = split_url(prefix_url)
        if not prefix:
            raise S3ConfigError(
                f"delete_prefix({os.fspath(prefix_url)!r}) would delete the whole bucket; pass a prefix "
                "such as 's3://bucket/run-1/'"
            )
        deleted = 0
        batch: list[ObjectIdentifierTypeDef] = []
        for info in self.iter_objects(prefix_url):
            batch.append({"Key": info.key})
            if len(batch) == MAX_KEYS_PER_DELETE:
                deleted += self._delete_batch(bucket, batch)
                batch = []
        if batch:
            deleted += self._delete_batch(bucket, batch)
        return deleted

    def _delete_batch(self, bucket: str, batch: list[ObjectIdentifierTypeDef]) -> int:
        response = self._call(
            lambda: self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True}),
            "DeleteObjects",
            bucket,
            batch[0]["Key"],
        )
        errors = response.get("Errors", [])
        if errors:
            sample = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in errors[:5])
            raise S3Error(
                f"DeleteObjects in s3://{bucket}: {len(errors)} of {len(batch)} keys were not deleted, "
                f"e.g. {sample}; check the credentials' s3:DeleteObject permission"
            )
        return len(batch)

    def abort_incomplete_uploads(
        self, prefix_url: str | os.PathLike[str], older_than: timedelta = timedelta(days=1)
    ) -> int:
        """Abort multipart uploads under ``prefix_url`` started more than ``older_than`` ago.

        Crashed writers leave their parts stored (and billed) until this or a lifecycle rule runs.
        Pass ``timedelta(0)`` to abort all, including uploads still in progress elsewhere.

        Returns:
            How many uploads were aborted.
        """
        bucket, prefix = split_url(prefix_url)
        cutoff = datetime.now(timezone.utc) - older_than
        aborted = 0
        markers: dict[str, Any] = {}
        while True:
            page = self._call(
                lambda markers=markers: self.client.list_multipart_uploads(
                    Bucket=bucket, Prefix=prefix, **markers
                ),
                "ListMultipartUploads",
                bucket,
                prefix,
            )
            for upload in page.get("Uploads", []):
                initiated = upload.get("Initiated")
                if initiated is not None and initiated > cutoff:
                    continue
                key, upload_id = upload["Key"], upload["UploadId"]
                self._call(
                    lambda key=key, upload_id=upload_id: self.client.abort_multipart_upload(
                        Bucket=bucket, Key=key, UploadId=upload_id
                    ),
                    "AbortMultipartUpload",
                    bucket,
                    key,
                )
                logger.info("aborted incomplete upload %s of s3://%s/%s", upload_id, bucket, key)
                aborted += 1
            if not page.get("IsTruncated"):
                return aborted
            markers = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }
