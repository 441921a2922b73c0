"""What a conversion wrote."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversionResult:
    """The outcome of one conversion.

    Attributes:
        source: the checkpoint read.
        destination: the folder, prefix or file written.
        files: ``(URL or path, bytes)`` of every file written, in the order they were published.
        tensors: how many tensors were written.
        seconds: wall time of the whole conversion.
    """

    source: str
    destination: str
    files: tuple[tuple[str, int], ...]
    tensors: int
    seconds: float

    @property
    def bytes(self) -> int:
        """Bytes written, all files together."""
        return sum(size for _, size in self.files)
