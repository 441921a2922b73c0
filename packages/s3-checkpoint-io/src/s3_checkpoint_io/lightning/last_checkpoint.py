"""``ckpt_path="last"`` without fsspec: the last checkpoint S3ModelCheckpoint found answers for itself.

Lightning 2.4 to 2.6 resolve ``"last"`` in ``_CheckpointConnector._parse_ckpt_path``: they ask every
ModelCheckpoint for candidates (``_find_last_checkpoints``), then probe each through fsspec,
``get_filesystem(path).exists(path)`` and ``.modified(path)``. For ``s3://`` that is s3fs, which knows only
the environment: with the endpoint, profile or client settings given to ``S3CheckpointIO`` in code (and a
missing or dead ``AWS_ENDPOINT_URL``) it finds nothing, training restarts at step 0 and later overwrites
``last.ckpt``.

S3ModelCheckpoint lists through the trainer's ``S3CheckpointIO`` and returns its pick as a
:class:`ListedCheckpoint`, a ``str`` that also carries the LastModified it was listed with. The
connector's ``get_filesystem`` is wrapped once (:func:`answer_connector_probes`) to answer for exactly
those objects from what is already known; every other path goes to Lightning's function unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lightning.pytorch.trainer.connectors import checkpoint_connector


class ListedCheckpoint(str):
    """An ``s3://`` checkpoint URL found by listing, with its LastModified (UTC).

    Attributes:
        last_modified: when the object was written, as S3 listed it.
    """

    last_modified: datetime

    def __new__(cls, url: str, last_modified: datetime) -> ListedCheckpoint:
        listed = super().__new__(cls, url)
        listed.last_modified = last_modified
        return listed

    def __reduce__(self) -> tuple[Any, ...]:
        return (ListedCheckpoint, (str(self), self.last_modified))


class _ListedFileSystem:
    """Answers the connector's two questions about a :class:`ListedCheckpoint` without a request."""

    @staticmethod
    def exists(path: ListedCheckpoint) -> bool:
        return True

    @staticmethod
    def modified(path: ListedCheckpoint) -> datetime:
        return path.last_modified


def answer_connector_probes() -> None:
    """Make Lightning's checkpoint connector take a :class:`ListedCheckpoint` as found (idempotent)."""
    current: Callable[..., Any] = checkpoint_connector.get_filesystem  # type: ignore[attr-defined]
    if getattr(current, "answers_listed_checkpoints", False):
        return

    @functools.wraps(current)
    def get_filesystem(path: Any, **kwargs: Any) -> Any:
        if isinstance(path, ListedCheckpoint):
            return _ListedFileSystem()
        return current(path, **kwargs)

    get_filesystem.answers_listed_checkpoints = True  # type: ignore[attr-defined]
    checkpoint_connector.get_filesystem = get_filesystem  # type: ignore[attr-defined]
