"""The upload helper process: it receives snapshots from the trainer and writes them to S3.

The trainer (:class:`~s3_checkpoint_io.background.upload_process.UploadProcess`) starts it once and
talks to it over a Unix socket (:mod:`~s3_checkpoint_io.background.wire`). It maps the trainer's
snapshot slabs, unpickles each snapshot as views of those pages, and writes it with
:func:`~s3_checkpoint_io.engine.write.write_checkpoint`, so serialization and HTTP never hold the
trainer's GIL.

Imports only the standard library, torch, s3_utils and this package's ``engine``, ``background`` and
``sent_errors`` modules, whose ``__init__`` files import nothing heavier: the helper never imports Lightning.
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
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from s3_checkpoint_io.background.wire import receive_message, send_message
from s3_checkpoint_io.engine.write import write_checkpoint
from s3_checkpoint_io.sent_errors import SentError
from s3_utils import S3Store

MAX_NICE = 19
"""Linux's largest nice value: how far below the trainer the helper can run."""


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


def serve(fd: int, nice: int = 0) -> None:
    """The upload process's main loop: answer every ``"upload"`` message on the socket ``fd``.

    Runs until the trainer closes the socket; exits at once (leaving any multipart upload incomplete,
    never completed) if the trainer dies.

    Args:
        fd: this end of the socket to the trainer.
        nice: how many nice levels below the trainer every thread of this process runs.
    """
    lower_priority(nice)
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


def lower_priority(nice: int) -> None:
    """Run every thread of this process, and so every thread started later, ``nice`` levels lower.

    Linux keeps a nice value per thread and a new thread inherits its creator's: the threads that
    exist now (the interpreter's, any an import started) are lowered one by one, and the threads the
    S3 client and torch start later inherit it. Called once the imports are done, so the helper's
    start-up (importing torch, once per run) is not the part that waits behind training.
    """
    if nice == 0:
        return
    target = min(os.getpriority(os.PRIO_PROCESS, 0) + nice, MAX_NICE)
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.setpriority(os.PRIO_PROCESS, int(tid), target)


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
    sent = SentError.of(exc)
    return ("failed", sent.pickled, sent.description, "".join(traceback.format_exception(exc)))


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
