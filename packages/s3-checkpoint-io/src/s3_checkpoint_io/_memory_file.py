"""An anonymous in-memory file to download a checkpoint into, so ``torch.load`` can map it.

``torch.load(path, mmap=True)`` makes every tensor a view of the file's pages instead of a copy. On an
in-memory file (Linux ``memfd``) that means the downloaded bytes ARE the loaded tensors: peak memory is
one checkpoint, not two (download buffer + unpickled copy). The pages are freed when the last tensor
that maps them is.
"""

from __future__ import annotations

import contextlib
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

    @property
    def path(self) -> str:
        """A path that opens this file (valid while it is open)."""
        return f"/proc/self/fd/{self._fd}"

    def buffer(self) -> memoryview:
        """A writable view of the file's ``size`` bytes; release it before :meth:`close`."""
        return memoryview(self._map)[: self.size]

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
