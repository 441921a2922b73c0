"""What a sharded checkpoint's commit references, read without running arbitrary pickled code.

The commit (``.metadata``, written by :class:`~s3_checkpoint_io.dcp.S3StorageWriter`) is DCP's pickled
``Metadata``. ``s3ckpt verify``, ``cp`` and ``cleanup`` need only the shard objects it names and how
many bytes of each it uses; they read it with an unpickler that admits DCP's metadata classes, this
package's commit records, torch sizes and dtypes, and nothing else, so they are safe on checkpoints
from anywhere.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch

from s3_checkpoint_io.errors import CorruptCheckpointError

_ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata", "s3_checkpoint_io.dcp._records")
_ALLOWED_TORCH = {("torch", "Size"), ("torch.serialization", "_get_layout")}


class _CommitUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _ALLOWED_MODULES or (module, name) in _ALLOWED_TORCH:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a sharded checkpoint's commit")


def shard_extents(commit: bytes | bytearray, url: str) -> dict[str, int]:
    """The shard objects a commit references, each with the bytes of it the checkpoint uses.

    Args:
        commit: the commit object's bytes.
        url: where it came from, for messages.

    Returns:
        ``{shard name under the prefix: end of the last item in it}``.

    Raises:
        CorruptCheckpointError: if the bytes are not a commit that ``S3StorageWriter`` wrote.
    """
    from torch.distributed.checkpoint.metadata import Metadata

    from s3_checkpoint_io.dcp._records import CommitRecord

    try:
        metadata = _CommitUnpickler(io.BytesIO(commit)).load()
    except Exception as exc:
        raise CorruptCheckpointError(f"{url} is not a readable sharded-checkpoint commit: {exc}") from exc
    record = getattr(metadata, "storage_data", None) if isinstance(metadata, Metadata) else None
    if not isinstance(record, CommitRecord):
        raise CorruptCheckpointError(f"{url} holds no S3StorageWriter commit record")
    extents = dict.fromkeys(record.shard_names, 0)
    for location in record.locations.values():
        extents[location.name] = max(extents.get(location.name, 0), location.offset + location.length)
    return extents
