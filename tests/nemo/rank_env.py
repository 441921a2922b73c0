"""The PYTHONPATH for NeMo ranks: this folder (rank_probes, nemo_app) before the caller's own path.

Keeping the caller's PYTHONPATH matters when the packages under test come from a source checkout on it
rather than from installed wheels: replacing it would make the ranks import other copies.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rank_pythonpath() -> str:
    """``tests/nemo`` followed by this process's PYTHONPATH, if any."""
    return os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
