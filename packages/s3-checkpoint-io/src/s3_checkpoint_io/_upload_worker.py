"""The upload process's side of an asynchronous save, and the one function every save writes with.

:func:`write_checkpoint` is how every save reaches S3: ``torch.save`` streamed into a multipart upload,
returning the writer's own statistics. A synchronous save runs it in the caller's thread, a
``"thread"`` uploader on the saver's worker thread, a ``"process"`` uploader here, in a helper
process (:func:`serve`) that the trainer starts once and talks to over a Unix socket
(:func:`send_message` / :func:`receive_message`: a length-prefixed pickle, plus file descriptors).

This module imports only the standard library, torch and s3_utils: the helper loads it by file path
(see ``_upload_process``), so it never imports Lightning or the rest of this package.
"""

from __future__ import annotations

import contextlib
import io
import logging
import mmap
import os
import pickle
import select
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import IO, Any, cast

import torch

from s3_utils import S3Store, TransferStats

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!QI")  # payload bytes, file descriptors that come with it
MAX_FDS_PER_MESSAGE = 200
"""Below the kernel's 253 descriptors per ``SCM_RIGHTS`` message."""


def write_checkpoint(store: S3Store, checkpoint: Any, url: str) -> TransferStats:
    """``torch.save`` ``checkpoint`` into a streaming multipart upload to ``url``.

    Args:
        store: the store to upload through.
        checkpoint: the state to save.
        url: an ``s3://bucket/key`` URL.

    Returns:
        The writer's statistics: bytes, seconds from opening the upload to completing it, requests
        sent (retries included) and retries.

    Raises:
        Exception: whatever ``torch.save`` or the upload raised; the upload is aborted then and no
            object appears at ``url``.
    """
    expected = storage_bytes(checkpoint)
    with without_zip_crc32(), store.open_writer(url, expected_size=expected) as writer:
        torch.save(checkpoint, cast(IO[bytes], writer))
    assert writer.stats is not None  # set when the writer closed without an error
    return writer.stats


def storage_bytes(obj: Any) -> int:
    """The bytes of the distinct tensor storages in ``obj`` (through dicts, lists and tuples): about
    what ``torch.save`` will write, which lets the upload split it into equal parallel parts."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.layout is torch.strided and not item.is_meta:
                storage = item.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


_crc32_lock = threading.Lock()
_crc32_users = 0
_crc32_before = True


@contextlib.contextmanager
def without_zip_crc32() -> Iterator[None]:
    """Let ``torch.save`` skip the zip CRC32 of every record while our saves run (where torch can).

    The upload carries a CRC64NVME of the whole object that S3 checks, and downloads check it again,
    so the zip's own checksum is redundant work (about a seventh of a save's CPU). torch's setting is
    process-wide: it is switched off while at least one of our saves runs and restored after the last.
    """
    global _crc32_users, _crc32_before
    config = _torch_save_config()
    if config is None:
        yield
        return
    with _crc32_lock:
        if _crc32_users == 0:
            _crc32_before = config.compute_crc32
            config.compute_crc32 = False
        _crc32_users += 1
    try:
        yield
    finally:
        with _crc32_lock:
            _crc32_users -= 1
            if _crc32_users == 0:
                config.compute_crc32 = _crc32_before


def _torch_save_config() -> Any:
    try:
        from torch.utils.serialization import config
    except ImportError:  # torch older than 2.6
        return None
    return config.save if hasattr(config.save, "compute_crc32") else None


# -- the wire: what the trainer and the upload process send each other --------------------------------


def send_message(sock: socket.socket, message: Any, fds: Sequence[int] = ()) -> None:
    """Send ``message`` (any picklable value) and ``fds`` (duplicated into the receiver) over ``sock``."""
    if len(fds) > MAX_FDS_PER_MESSAGE:
        raise ValueError(f"{len(fds)} descriptors in one message; at most {MAX_FDS_PER_MESSAGE}")
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data), len(fds)))
    if fds:
        socket.send_fds(sock, [b"F"], list(fds))
    sock.sendall(data)


def receive_message(sock: socket.socket) -> tuple[Any, list[int]]:
    """The next message and the descriptors that came with it (the caller owns and closes those).

    Raises:
        EOFError: if the other side closed the socket (or died) before a whole message arrived.
    """
    size, count = _HEADER.unpack(_receive_exactly(sock, _HEADER.size))
    fds: list[int] = []
    if count:
        _, fds, _, _ = socket.recv_fds(sock, 1, count)
        if len(fds) != count:
            raise EOFError(f"expected {count} file descriptors, got {len(fds)}")
    return pickle.loads(_receive_exactly(sock, size)), fds


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("the other process closed the connection")
        got += n
    return bytes(buffer)


# Messages are tuples of builtins and s3_utils types: the upload process loads this module by file
# path, so a class defined here would not unpickle there under its package name.
#   trainer -> upload process:
#     ("start", S3ClientConfig, TransferConfig, sys_path, log_level)   first, once
#     ("slabs", ((slab_id, size), ...))                                the descriptors come with it
#     ("upload", url, payload, forget_slab_ids)                        answered with one of:
#   upload process -> trainer:
#     ("uploaded", TransferStats)
#     ("failed", pickled_exception_or_None, "TypeName: message", traceback_text)
#     ("stop",)                                                        from the trainer: exit


# -- the upload process ---------------------------------------------------------------------------------


class _Slabs:
    """The trainer's snapshot slabs, mapped here from their descriptors."""

    def __init__(self) -> None:
        self._maps: dict[int, mmap.mmap] = {}

    def add(self, slabs: Sequence[tuple[int, int]], fds: list[int]) -> None:
        for (slab_id, size), fd in zip(slabs, fds, strict=True):
            try:
                self._maps[slab_id] = mmap.mmap(fd, size)
            finally:
                os.close(fd)

    def forget(self, slab_ids: Sequence[int]) -> None:
        for slab_id in slab_ids:
            self._maps.pop(slab_id, None)  # unmapped once the last storage over it is gone

    def load(self, payload: bytes) -> Any:
        """Unpickle a snapshot whose storages are named by slab region: views of the mapped pages."""
        storages: dict[tuple[int, int, int], torch.UntypedStorage] = {}
        maps = self._maps

        class _Unpickler(pickle.Unpickler):
            def persistent_load(self, pid: Any) -> Any:
                slab_id, offset, nbytes, dtype = pid
                key = (slab_id, offset, nbytes)
                storage = storages.get(key)
                if storage is None:
                    if slab_id < 0:  # an empty storage
                        storage = storages[key] = torch.UntypedStorage(0)  # type: ignore[no-untyped-call]
                    else:
                        view = torch.frombuffer(maps[slab_id], dtype=torch.uint8, count=nbytes, offset=offset)
                        storage = storages[key] = view.untyped_storage()
                if dtype is None:
                    return storage
                return torch.storage.TypedStorage(  # type: ignore[no-untyped-call]
                    wrap_storage=storage, dtype=dtype, _internal=True
                )

        return _Unpickler(io.BytesIO(payload)).load()


def serve(fd: int) -> None:
    """The upload process's main loop: answer every ``"upload"`` message on the socket ``fd``.

    Runs until the trainer closes the socket; exits at once (leaving any multipart upload incomplete,
    never completed) if the trainer dies.
    """
    sock = socket.socket(fileno=fd)
    _exit_with_parent()
    (kind, client_config, transfer_config, sys_path, log_level), _ = receive_message(sock)
    assert kind == "start", kind
    sys.path[:0] = [entry for entry in sys_path if entry not in sys.path]
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s s3-checkpoint-io upload process %(name)s: %(message)s",
    )
    slabs = _Slabs()
    with S3Store(client_config, transfer_config) as store:
        while True:
            try:
                message, fds = receive_message(sock)
            except EOFError:
                return
            if message[0] == "slabs":
                slabs.add(message[1], fds)
            elif message[0] == "upload":
                _, url, payload, forget = message
                send_message(sock, _upload(store, slabs, url, payload, forget))
            else:
                return  # "stop"


def _upload(
    store: S3Store, slabs: _Slabs, url: str, payload: bytes, forget: Sequence[int]
) -> tuple[Any, ...]:
    slabs.forget(forget)
    try:
        state = slabs.load(payload)
        return ("uploaded", write_checkpoint(store, state, url))
    except Exception as exc:
        return describe_failure(exc)


def describe_failure(exc: BaseException) -> tuple[str, bytes | None, str, str]:
    """``exc`` as it travels to the trainer: pickled if it survives the round trip, else described."""
    description = f"{type(exc).__name__}: {exc}"
    remote = "".join(traceback.format_exception(exc))
    try:
        pickled = pickle.dumps(exc)
        pickle.loads(pickled)
        data: bytes | None = pickled
    except Exception:
        data = None
    return ("failed", data, description, remote)


def _exit_with_parent() -> None:
    # A trainer that dies takes its uploads with it, as when they were its threads: os._exit leaves
    # the multipart upload incomplete (invisible to readers) rather than publishing a checkpoint late.
    parent = os.getppid()

    def watch() -> None:
        try:
            pidfd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            while os.getppid() == parent:
                time.sleep(0.5)
        else:
            select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="s3-checkpoint-io-parent-watch", daemon=True).start()
