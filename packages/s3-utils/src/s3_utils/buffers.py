"""Part buffers for streaming uploads: reused from part to part, backed by large pages, sent without a copy.

A streaming upload fills a part buffer, hands it to a worker to send, and fills the next. Allocating
a fresh buffer per part costs a page fault and a zeroed page for every 4 KiB of it, and turning it
into ``bytes`` for botocore costs a full copy, both holding the GIL: together the largest share of a
save's CPU. :class:`BufferPool` gives a sent buffer back to the next part instead, and
:class:`BufferBody` lets botocore read a buffer in place.

The buffers a pool creates are anonymous mappings the kernel is asked to back with transparent huge
pages (``MADV_HUGEPAGE``): filling a fresh 64 MiB buffer then faults 32 pages of 2 MiB instead of
16,384 of 4 KiB. Measured on this project's 2-core host (Linux 6.18, THP ``madvise``): 11 to 14 ms of
CPU per fresh 64 MiB filled against 48 to 50 ms for a ``bytearray`` (7 ms to refill a reused one).
A planned 512 MiB upload fills ten fresh parts, so that is about 0.3 s of CPU per save, spent holding
the GIL. Where the platform has no ``MADV_HUGEPAGE`` (or the kernel refuses it) the buffer is a plain
``bytearray`` or an ordinary mapping: the same bytes, only slower to fill.

Between uploads a store keeps up to :data:`KEPT_BUFFER_BYTES` of the buffers its last writers used
(:class:`KeptBuffers`), so the next save refills them instead of faulting fresh memory: a small
checkpoint, saved every few steps, then takes no new buffer at all.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import threading
from typing import IO, cast

PartBuffer = bytearray | mmap.mmap
"""A writable part buffer: a mapping backed by large pages where the platform has them, else a bytearray."""

LARGE_PAGE = 2 * 1024 * 1024
"""The size of an x86-64/arm64 transparent huge page; smaller buffers are plain bytearrays."""

_HUGEPAGE_ADVICE: int | None = getattr(mmap, "MADV_HUGEPAGE", None)

SEND_PIECE = 1024 * 1024
"""The smallest piece :meth:`BufferBody.read` hands out (all that is left, if less).

urllib3 reads a request body in botocore's 128 KiB blocks and ``sendall``s each: 4,096 rounds of
Python per 512 MiB saved, each taking and releasing the GIL. Answering with 1 MiB slices instead cuts
that to 512. Measured on this project's 2-core host (sync 512 MiB ``S3CheckpointIO`` saves to
SeaweedFS, median of 8, two runs each): 0.27 to 0.30 s of process CPU per save against 0.34, with no
change in wall time.
"""


def new_part_buffer(size: int) -> PartBuffer:
    """A new zero-filled buffer of ``size`` bytes, backed by transparent huge pages where possible.

    Args:
        size: the buffer's length in bytes.

    Returns:
        An anonymous private mapping advised ``MADV_HUGEPAGE`` (Linux), or a ``bytearray`` for a
        buffer below :data:`LARGE_PAGE` or a platform without the advice.
    """
    if _HUGEPAGE_ADVICE is None or size < LARGE_PAGE:
        return bytearray(size)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # THP unsupported: an ordinary mapping, faulted in 4 KiB pages
        buffer.madvise(_HUGEPAGE_ADVICE)
    return buffer


class BufferBody(io.RawIOBase):
    """A read-only, seekable file over a memoryview, for a request body: reads return slices, not copies.

    botocore accepts any object with ``read`` as a ``Body``; http.client and urllib3 send whatever
    ``read`` returns with ``sendall``, which takes a memoryview. ``read(size)`` may return more than
    ``size``, up to :data:`SEND_PIECE`: its callers here (urllib3, http.client) send what they get and
    read again until it is empty; :meth:`readinto` fills at most its target. Make a new one per attempt
    (a retry starts from the beginning).

    Args:
        view: the bytes to send; they must not change until the request is over.
    """

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: len(self._view)}[whence]
        self._position = min(max(0, base + offset), len(self._view))
        return self._position

    def read(self, size: int | None = -1) -> memoryview:
        if size is None or size < 0:
            return self._take(len(self._view))
        return self._take(max(size, SEND_PIECE) if size else 0)

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        piece = self._take(len(target))
        memoryview(target)[: len(piece)] = piece
        return len(piece)

    def _take(self, size: int) -> memoryview:
        end = min(len(self._view), self._position + size)
        piece = self._view[self._position : end]
        self._position = end
        return piece


def request_body(view: memoryview) -> IO[bytes]:
    """A :class:`BufferBody` over ``view``, typed as the file botocore's stubs expect for a ``Body``."""
    return cast(IO[bytes], BufferBody(view))


KEPT_BUFFER_BYTES = 32 * 1024 * 1024
"""How many bytes of part buffers a store keeps between uploads (:class:`KeptBuffers`).

Enough for every part of a 16 MiB checkpoint (three planned parts of 5.6 MiB) and one 26 MiB part of a
512 MiB one. Measured on this project's 2-core host (sync 16 MiB ``S3CheckpointIO`` saves to SeaweedFS,
fresh buffers against buffers kept from the save before, shuffled, 12 rounds of 3): filling the parts
took 15.1 against 3.7 ms of CPU per save, the whole save 43.7 against 31.9 ms (1,033 against 444 page
faults). It is also the most a store holds between saves: an async save's helper held 703 MiB (PSS) at
512 MiB before, and the target is 733.
"""


class KeptBuffers:
    """Part buffers a store keeps between uploads, at most ``limit`` bytes of them; thread-safe.

    A writer's :class:`BufferPool` takes from here before it creates a buffer, and gives its buffers
    here when it closes; what does not fit under the limit is dropped.

    Args:
        limit: the most bytes of buffers kept.
    """

    def __init__(self, limit: int = KEPT_BUFFER_BYTES) -> None:
        self._limit = limit
        self._kept: list[PartBuffer] = []
        self._lock = threading.Lock()

    @property
    def kept_bytes(self) -> int:
        """How many bytes of buffers are kept now."""
        with self._lock:
            return sum(len(buffer) for buffer in self._kept)

    def take(self, size: int) -> PartBuffer | None:
        """A kept buffer of at least ``size`` bytes, no longer kept; None if none is that large."""
        with self._lock:
            for index, buffer in enumerate(self._kept):
                if len(buffer) >= size:
                    return self._kept.pop(index)
        return None

    def keep(self, buffers: list[PartBuffer]) -> None:
        """Keep as many of ``buffers`` as fit under the limit, largest first; nothing may still read them."""
        with self._lock:
            room = self._limit - sum(len(buffer) for buffer in self._kept)
            for buffer in sorted(buffers, key=len, reverse=True):
                if len(buffer) <= room:
                    self._kept.append(buffer)
                    room -= len(buffer)

    def clear(self) -> None:
        """Drop every buffer kept."""
        with self._lock:
            self._kept.clear()


class BufferPool:
    """Buffers given back after a part is sent, handed out again for the next part.

    The pool never creates more buffers than its callers ask for at once; the writer bounds that by
    its in-flight slots, so memory stays ``(max_concurrency + 1)`` parts. A buffer smaller than the
    size asked for (parts grow) is dropped, not reused.

    Args:
        kept: the store's buffers kept between uploads: taken from before a buffer is created, and
            given the pool's buffers on :meth:`clear`.
    """

    def __init__(self, kept: KeptBuffers) -> None:
        self._free: list[PartBuffer] = []
        self._kept = kept
        self._lock = threading.Lock()

    def take(self, size: int) -> PartBuffer:
        """A buffer of at least ``size`` bytes: a given-back one, a kept one, or a new one
        (:func:`new_part_buffer`)."""
        with self._lock:
            while self._free:
                buffer = self._free.pop()
                if len(buffer) >= size:
                    return buffer
        kept = self._kept.take(size)
        return kept if kept is not None else new_part_buffer(size)

    def give_back(self, buffer: PartBuffer) -> None:
        """Make ``buffer`` available to the next :meth:`take`; nothing may still be reading it."""
        with self._lock:
            self._free.append(buffer)

    def clear(self) -> None:
        """Hold no buffer: the given-back ones go to the store's kept buffers, as many as fit."""
        with self._lock:
            free, self._free = self._free, []
        self._kept.keep(free)
