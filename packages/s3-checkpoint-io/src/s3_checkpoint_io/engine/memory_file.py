"""An anonymous in-memory file to download a checkpoint into, so ``torch.load`` can map it.

``torch.load(path, mmap=True)`` makes every tensor a view of the file's pages instead of a copy. On an
in-memory file (Linux ``memfd``) that means the downloaded bytes ARE the loaded tensors: peak memory is
one checkpoint, not two (download buffer + unpickled copy).

A mapping stays whole while any tensor made from it survives, so :mod:`~s3_checkpoint_io.engine.load`
copies each storage out as ``torch.load`` reaches it and frees that part of the file at once
(:meth:`MemoryFile.release`): the peak stays about one checkpoint, and the loaded tensors are ordinary
memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from types import TracebackType


def memory_files_supported() -> bool:
    """Whether this platform has anonymous in-memory files reachable by path (Linux)."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


class MemoryFile:
    """A RAM-backed file of ``size`` bytes with a writable buffer over it and a path to open it by.

    Args:
        size: the file's size in bytes.
        name: shown in ``/proc/<pid>/fd`` listings, for debugging.
    """

    def __init__(self, size: int, name: str = "s3-checkpoint") -> None:
        self._fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, size)
            # mmap cannot map 0 bytes; an empty file still has a path torch.load can reject properly
            self._map = mmap.mmap(self._fd, size) if size else mmap.mmap(-1, 1)
        except BaseException:
            os.close(self._fd)
            raise
        self.size = size
        anchor = ctypes.c_char.from_buffer(self._map)  # a buffer export: dropped at once, so close()
        self._address = ctypes.addressof(anchor)  # can unmap; the address holds while the map does
        del anchor
        self._inode = os.fstat(self._fd).st_ino
        self._known_mapping: tuple[int, int, int] | None = None  # start, end, file offset
        self._can_release = True

    @property
    def path(self) -> str:
        """A path that opens this file (valid while it is open)."""
        return f"/proc/self/fd/{self._fd}"

    @property
    def address(self) -> int:
        """Where this file's bytes start in this process's memory (valid until :meth:`close`)."""
        return self._address

    def buffer(self) -> memoryview:
        """A writable view of the file's ``size`` bytes; release it before :meth:`close`."""
        return memoryview(self._map)[: self.size]

    def release(self, offset: int, length: int) -> None:
        """Free the file's whole pages inside bytes ``[offset, offset + length)``; they read as zeros after.

        Pages shared with bytes outside the range are kept. Best effort: where the kernel refuses, the
        pages stay until the file is closed and unmapped.
        """
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = min(offset + length, self.size) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and self._can_release:
            try:
                self._map.madvise(mmap.MADV_REMOVE, start, end - start)
            except OSError:
                self._can_release = False

    def offset_at(self, address: int) -> int | None:
        """The file offset mapped at ``address`` by any mapping of this file (say, ``torch.load``'s).

        Returns:
            The offset, or None if ``address`` is not in a mapping of this file.
        """
        known = self._known_mapping
        if known is None or not known[0] <= address < known[1]:
            known = self._known_mapping = self._find_mapping(address)
        return None if known is None else address - known[0] + known[2]

    def _find_mapping(self, address: int) -> tuple[int, int, int] | None:
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    fields = line.split()
                    start, end = (int(bound, 16) for bound in fields[0].split("-"))
                    if start <= address < end and len(fields) > 4 and int(fields[4]) == self._inode:
                        return start, end, int(fields[2], 16)
        except OSError:
            pass  # no /proc: the caller copies without freeing pages
        return None

    def close(self) -> None:
        """Close this handle; mappings made from :attr:`path` (e.g. loaded tensors) stay valid."""
        if self._fd >= 0:
            with contextlib.suppress(BufferError):  # a view is still alive (say, in a traceback):
                self._map.close()  # the map is freed with it
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MemoryFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
