"""Bytes to upload in tests: pseudo-random (so no compression or dedup helps) and reproducible."""

from __future__ import annotations

import random


def payload(size: int, seed: int | None = None) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``size`` and ``seed`` on every run.

    Args:
        size: How many bytes.
        seed: Picks another byte sequence of the same size; ``size`` itself when None.

    Returns:
        The bytes.
    """
    return random.Random(size if seed is None else seed).randbytes(size)
