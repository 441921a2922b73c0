"""``ckpt_path="last"`` without fsspec: the last checkpoint S3ModelCheckpoint found answers for itself.

Lightning 2.4 to 2.6 resolve ``"last"`` in ``_CheckpointConnector._parse_ckpt_path``: they ask every
ModelCheckpoint for candidates (``_find_last_checkpoints``), then probe each through fsspec,
``get_filesystem(path).exists(path)`` and ``.modified(path)``. For ``s3://`` that is s3fs, which knows only
the environment: with the endpoint, profile or client settings given to ``S3CheckpointIO`` in code (and a
missing or dead ``AWS_ENDPOINT_URL``) it finds nothing, training restarts at step 0 and later overwrites
``last.ckpt``.

S3ModelCheckpoint lists through the trainer's ``S3CheckpointIO`` and returns its pick as a
:class:`ListedCheckpoint`, a ``str`` that also carries the LastModified it was listed with, and
:class:`ListedFileSystem` answers the connector's probes of it from what is already known. How that
answer reaches the connector (for that one probe, never for the whole process) is Lightning-private:
:func:`s3_checkpoint_io.lightning.lightning_internals.answer_probes_for`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


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


class ListedFileSystem:
    """Answers the connector's two questions about a :class:`ListedCheckpoint` without a request."""

    @staticmethod
    def exists(path: ListedCheckpoint) -> bool:
        """Always: the listing found it."""
        return True

    @staticmethod
    def modified(path: ListedCheckpoint) -> datetime:
        """The LastModified the listing gave."""
        return path.last_modified
