"""Parse the short durations the CLI takes (``90s``, ``30m``, ``12h``, ``1d``, ``2w``)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """Turn ``<number><unit>`` into a timedelta; units are s, m, h, d and w.

    Args:
        text: for example ``"1d"``, ``"36h"`` or ``"0.5h"``.

    Returns:
        The duration.

    Raises:
        ValueError: naming the input and the accepted form, if it does not parse.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"cannot read duration {text!r}; write a number and a unit, e.g. 90s, 30m, 12h, 1d or 2w"
        )
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
