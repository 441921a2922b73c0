"""Progress for downloads that write at offsets: watch how many bytes the target file holds on disk."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

_BLOCK = 512  # st_blocks is always counted in 512-byte units


class FileGrowthWatcher:
    """A thread that reports the bytes allocated to a file as they grow, until the block is left.

    The file is the first one in ``folder`` whose name starts with ``name_prefix`` and that was not
    there when the watcher started (the download's temporary file, whose full name is random). Ranged
    downloads write their pieces at offsets into a file pre-sized to the object (a sparse file filling
    in), so the allocated size, not the apparent size, tracks what has arrived. The context manager owns
    the thread and stops it.

    Args:
        folder: where the file will appear.
        name_prefix: the start of its name.
        on_growth: called with the number of new bytes since the last call.
        interval_s: how often to look.
    """

    def __init__(
        self, folder: Path, name_prefix: str, on_growth: Callable[[int], None], interval_s: float = 0.1
    ) -> None:
        self._folder = folder
        self._prefix = name_prefix
        self._before = set(self._candidates())
        self._path: Path | None = None
        self._on_growth = on_growth
        self._interval = interval_s
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="s3ckpt-progress", daemon=True)

    def _candidates(self) -> list[Path]:
        try:
            return [p for p in self._folder.iterdir() if p.name.startswith(self._prefix)]
        except OSError:
            return []

    def _allocated(self) -> int:
        if self._path is None:
            fresh = [p for p in self._candidates() if p not in self._before]
            if not fresh:
                return self._seen
            self._path = fresh[0]
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return self._seen
        return min(info.st_size, info.st_blocks * _BLOCK)

    def _report(self) -> None:
        now = self._allocated()
        if now > self._seen:
            self._on_growth(now - self._seen)
            self._seen = now

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self._report()

    def __enter__(self) -> FileGrowthWatcher:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
