"""A one-line transfer progress display on stderr, fed by byte counts from transfer threads."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import TextIO

_MIB = 1024 * 1024


class ProgressLine:
    """Redraws ``label  done/total MiB  pct  MiB/s`` in place, at most ``max_redraws_per_s`` a second.

    ``add`` is safe to call from many transfer threads at once. Use as a context manager: leaving it
    ends the line. When ``enabled`` is False every call is a no-op, so callers need no branches.

    Args:
        label: what is being transferred (usually the file or key name).
        total_bytes: expected size, or None when unknown.
        stream: where to draw (stderr, so stdout stays clean for scripts).
        enabled: draw at all (typically ``stream.isatty()`` unless forced by ``--progress``).
        max_redraws_per_s: throttle for redraws.
    """

    def __init__(
        self,
        label: str,
        total_bytes: int | None,
        stream: TextIO,
        enabled: bool = True,
        max_redraws_per_s: float = 10.0,
    ) -> None:
        self._label = label
        self._total = total_bytes
        self._stream = stream
        self._enabled = enabled
        self._interval = 1.0 / max_redraws_per_s
        self._lock = threading.Lock()
        self._done = 0
        self._started = time.monotonic()
        self._last_draw = 0.0

    @property
    def done_bytes(self) -> int:
        """Bytes reported so far."""
        return self._done

    def add(self, nbytes: int) -> None:
        """Record ``nbytes`` more bytes transferred, redrawing if the throttle allows."""
        with self._lock:
            self._done += nbytes
            now = time.monotonic()
            if self._enabled and now - self._last_draw >= self._interval:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float, end: str = "") -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / _MIB / elapsed
        if self._total:
            pct = min(100.0, 100.0 * self._done / self._total)
            text = f"{self._label}  {self._done / _MIB:,.1f}/{self._total / _MIB:,.1f} MiB  {pct:3.0f}%"
        else:
            text = f"{self._label}  {self._done / _MIB:,.1f} MiB"
        self._stream.write(f"\r{text}  {rate:,.1f} MiB/s\x1b[K{end}")
        self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            if self._enabled:
                self._draw(time.monotonic(), end="\n")
                self._enabled = False

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
