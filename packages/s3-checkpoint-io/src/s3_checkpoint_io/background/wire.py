"""What the trainer and its upload helper process send each other over their Unix socket.

A message is a length-prefixed pickle, plus file descriptors passed with ``SCM_RIGHTS``. Messages are
tuples of builtins and s3_utils types only:

    trainer -> upload helper:
      ("start", S3ClientConfig, TransferConfig, sys_path, log_level)   first, once
      ("slabs", ((slab_id, size), ...))                                the descriptors come with it
      ("upload", url, payload, forget_slab_ids)                        answered with one of:
    upload helper -> trainer:
      ("uploaded", TransferStats)
      ("failed", pickled_exception_or_None, "TypeName: message", traceback_text)
      ("stop",)                                                        from the trainer: exit

Imports only the standard library: the upload helper process imports it too.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Sequence
from typing import Any

_HEADER = struct.Struct("!QI")  # payload bytes, file descriptors that come with it
MAX_FDS_PER_MESSAGE = 200
"""Below the kernel's 253 descriptors per ``SCM_RIGHTS`` message."""


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
