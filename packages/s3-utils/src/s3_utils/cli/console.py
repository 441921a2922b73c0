"""The streams and switches a command talks to the user through, kept apart so tests can swap them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type information


class UsageError(Exception):
    """The command line asks for something that cannot be done as written (exit code 2)."""


@dataclass
class Console:
    """Where a command writes results (``out``), messages and progress (``err``), and reads answers.

    Attributes:
        out: results, for people and scripts (tables, JSON).
        err: progress bars, warnings and errors.
        stdin: where confirmations are read from.
        progress: draw progress bars: True, False, or None to draw only when ``err`` is a terminal.
    """

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    progress: bool | None = None

    def print(self, text: str = "") -> None:
        """Write one line of results to ``out``."""
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """Write one line of information or warning to ``err``."""
        self.err.write(text + "\n")

    def progress_bar(self, label: str, total_bytes: int | None) -> tqdm:
        """A byte progress bar on ``err`` (rate, ETA, terminal width), drawn according to :attr:`progress`.

        Use it as a context manager and feed it with ``update(nbytes)``; leaving it ends the line. When
        not drawn, every call is a no-op, so callers need no branches.
        """
        enabled = self.progress if self.progress is not None else _isatty(self.err)
        return tqdm(
            desc=label,
            total=total_bytes,
            file=self.err,
            disable=not enabled,
            unit="iB",  # with unit_scale and 1024: KiB, MiB, GiB and MiB/s
            unit_scale=True,
            unit_divisor=1024,
            dynamic_ncols=True,
            mininterval=0.1,
        )

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question on the terminal; anything but ``y``/``yes`` is no.

        Raises:
            UsageError: if stdin is not a terminal, so nobody can answer (pass ``--yes`` instead).
        """
        if not _isatty(self.stdin):
            raise UsageError(f"{question.rstrip('?')}: refusing without a terminal to ask on; pass --yes")
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        answer = self.stdin.readline()
        return answer.strip().lower() in ("y", "yes")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
