"""A read-only, seekable file over a buffer, so ``torch.load`` can read a download without copying it."""

from __future__ import annotations

import io
from typing import Any

from typing_extensions import Buffer


class BufferReader(io.RawIOBase):
    """A binary file that reads from ``buffer`` in place (``io.BytesIO`` would copy it first).

    Args:
        buffer: any object supporting the buffer protocol, e.g. the ``bytearray`` from
            ``S3Store.download_bytes``.
    """

    def __init__(self, buffer: Buffer) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        count = max(0, min(len(out), len(self._view) - self._position))
        out[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        start, self._position = self._position, max(self._position, end)
        return self._view[start:end].tobytes()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._view.release()
        super().close()
