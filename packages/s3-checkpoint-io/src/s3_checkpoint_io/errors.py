"""Errors raised by s3_checkpoint_io, each also the natural built-in a caller may already catch."""

from __future__ import annotations

import pickle


class CheckpointIOError(Exception):
    """Base class of every error raised by s3_checkpoint_io itself."""


class BackgroundSaveError(CheckpointIOError, RuntimeError):
    """An asynchronous save (or a removal queued behind one) failed in the background.

    It is raised at the next ``save_checkpoint``, ``remove_checkpoint``, ``wait_for_saves`` or
    ``teardown``; the original exception is its ``__cause__``.

    Attributes:
        path: the checkpoint URL whose save or removal failed.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class UploadProcessError(CheckpointIOError, RuntimeError):
    """The upload process of an asynchronous save died (say, OOM-killed), or raised an exception that
    could not be sent back as itself. Nothing was published at the checkpoint's path."""


class CorruptCheckpointError(CheckpointIOError, ValueError):
    """The object is not a readable ``torch.save`` checkpoint (truncated, corrupt, or another format)."""


class WeightsOnlyLoadError(CheckpointIOError, pickle.UnpicklingError):
    """``weights_only=True`` refused the checkpoint because it holds objects that need full unpickling."""


class CheckpointExistsError(CheckpointIOError, FileExistsError):
    """A save was asked not to overwrite, and a checkpoint is already committed where it would go."""


class NodeReaderLostError(CheckpointIOError, ConnectionError):
    """A rank stopped answering (killed, say) while a checkpoint read once per node was shared.

    Attributes:
        url: the checkpoint being loaded.
        reader: the global rank that reads it for this rank's node.
    """

    def __init__(self, message: str, url: str, reader: int) -> None:
        super().__init__(message)
        self.url = url
        self.reader = reader

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.url, self.reader))


class PeerReadError(CheckpointIOError, RuntimeError):
    """A rank of a sharded (DCP) load could not get the replicated items another rank reads for it:
    that rank failed to read them, or stopped. Every rank of the load raises it (none waits forever).

    Attributes:
        rank: the rank of the load's process group that failed, when known (None: a rank stopped).
    """

    def __init__(self, message: str, rank: int | None) -> None:
        super().__init__(message)
        self.rank = rank

    def __reduce__(self) -> tuple[type[PeerReadError], tuple[str, int | None]]:
        return type(self), (str(self), self.rank)  # it travels between ranks (DCP gathers errors)
