"""Why a conversion refused to start: each also the built-in a caller may already catch.

Every one of these is raised before anything is written at the destination.
"""

from __future__ import annotations

from s3_checkpoint_io.errors import CheckpointIOError


class ConversionError(CheckpointIOError):
    """Base class of the errors a conversion raises itself."""


class SourceNotFoundError(ConversionError, FileNotFoundError):
    """Nothing exists at the source URL or path."""


class IncompleteCheckpointError(ConversionError, FileNotFoundError):
    """The sharded checkpoint's commit names a shard object that is missing or shorter than its items."""


class DestinationExistsError(ConversionError, FileExistsError):
    """The destination already holds what the conversion would write (pass ``overwrite=True``)."""


class SelectionError(ConversionError, ValueError):
    """The tensors asked for cannot be written: the key filter matches nothing, or a dtype has no
    safetensors equivalent."""


class UnsupportedConversionError(ConversionError, ValueError):
    """The source cannot be converted to the format asked for (e.g. a torch.save file to torch.save)."""
