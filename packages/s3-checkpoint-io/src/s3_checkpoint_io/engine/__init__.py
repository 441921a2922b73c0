"""Single-file checkpoints: write one to S3 with ``torch.save``, load one from a download.

Imports torch and s3_utils only (no Lightning): the upload helper process writes through it too.
"""

from __future__ import annotations

from s3_checkpoint_io.engine.buffer_reader import BufferReader
from s3_checkpoint_io.engine.load import download_target, load_from_buffer
from s3_checkpoint_io.engine.memory_file import MemoryFile, memory_files_supported
from s3_checkpoint_io.engine.write import storage_bytes, write_checkpoint

__all__ = [
    "BufferReader",
    "MemoryFile",
    "download_target",
    "load_from_buffer",
    "memory_files_supported",
    "storage_bytes",
    "write_checkpoint",
]
