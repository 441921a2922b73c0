"""Names that moved between the Python and Lightning versions we support."""

from __future__ import annotations

from typing_extensions import override

__all__ = ["override"]
