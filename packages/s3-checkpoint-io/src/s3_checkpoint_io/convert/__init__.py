"""Convert checkpoints for publishing: to Hugging Face safetensors, or to one ``torch.save`` file.

Sources: a sharded (DCP) checkpoint, whoever wrote it (this package, torch's ``FileSystemWriter``,
s3torchconnector), or one ``torch.save`` / Lightning file; ``s3://`` or local, both ways. Also
``s3ckpt convert``. See ``docs/convert.md``.
"""

from __future__ import annotations

from s3_checkpoint_io.convert.errors import (
    ConversionError,
    DestinationExistsError,
    IncompleteCheckpointError,
    SelectionError,
    SourceNotFoundError,
    UnsupportedConversionError,
)
from s3_checkpoint_io.convert.result import ConversionResult
from s3_checkpoint_io.convert.safetensors_format import DEFAULT_MAX_FILE_BYTES
from s3_checkpoint_io.convert.to_safetensors import Selection, to_safetensors
from s3_checkpoint_io.convert.to_torch_save import to_torch_save

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "ConversionError",
    "ConversionResult",
    "DestinationExistsError",
    "IncompleteCheckpointError",
    "Selection",
    "SelectionError",
    "SourceNotFoundError",
    "UnsupportedConversionError",
    "to_safetensors",
    "to_torch_save",
]
