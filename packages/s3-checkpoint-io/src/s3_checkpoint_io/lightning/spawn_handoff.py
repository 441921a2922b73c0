"""Lightning's ``ddp_spawn`` hand-off of the final weights, which goes through the trainer's CheckpointIO.

When ``fit`` ends under ``strategy="ddp_spawn"``, rank 0 saves the model's ``state_dict`` with the
strategy's ``checkpoint_io`` to ``<tempfile.mkdtemp()>/.temp.ckpt``, and the main process loads it
from there and removes it (``_MultiProcessingLauncher``; tested on Lightning 2.6.6 and 2.4.0). That file is
local by design and never meant for S3, so :class:`~s3_checkpoint_io.S3CheckpointIO` hands exactly
that path to Lightning's ``TorchCheckpointIO``; every other local path is still refused.
"""

from __future__ import annotations

import inspect
import os
import pathlib
import tempfile
from typing import Any

from lightning.fabric.plugins import TorchCheckpointIO

HANDOFF_NAME = ".temp.ckpt"
"""The file name Lightning's multiprocessing launcher gives the weights it hands to the main process."""

_LOCAL = TorchCheckpointIO()  # holds no state


def handoff_path(path: str | os.PathLike[str]) -> pathlib.Path | None:
    """``path`` if it is ``ddp_spawn``'s hand-off file, else None.

    Args:
        path: the path a save, load or removal was asked for.

    Returns:
        ``<system temp dir>/tmp<random>/.temp.ckpt`` as a path; None for any other path (an
        ``s3://`` URL included).
    """
    candidate = pathlib.Path(os.fspath(path))
    folder = candidate.parent
    if (
        candidate.name == HANDOFF_NAME
        and folder.name.startswith(tempfile.template)
        and folder.parent == pathlib.Path(tempfile.gettempdir())
    ):
        return candidate
    return None


def save(checkpoint: Any, path: pathlib.Path) -> None:
    """Write the hand-off file as Lightning's ``TorchCheckpointIO`` does."""
    _LOCAL.save_checkpoint(checkpoint, path)


def load(path: pathlib.Path, map_location: Any, weights_only: bool | None) -> dict[str, Any]:
    """Read the hand-off file as Lightning's ``TorchCheckpointIO`` does; None maps onto the CPU."""
    location: Any = "cpu" if map_location is None else map_location
    if "weights_only" not in inspect.signature(_LOCAL.load_checkpoint).parameters:  # Lightning 2.4
        return _LOCAL.load_checkpoint(path, map_location=location)
    return _LOCAL.load_checkpoint(path, map_location=location, weights_only=weights_only)


def remove(path: pathlib.Path) -> None:
    """Delete the hand-off file as Lightning's ``TorchCheckpointIO`` does."""
    _LOCAL.remove_checkpoint(path)
