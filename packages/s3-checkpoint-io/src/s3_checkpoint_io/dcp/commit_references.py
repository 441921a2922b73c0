"""What a sharded checkpoint's commit references, read without running arbitrary pickled code.

The commit (``.metadata``) is DCP's pickled ``Metadata``, whichever writer made it (ours, torch's, or
s3torchconnector's). ``s3ckpt verify``, ``cp`` and ``cleanup`` need only the shard objects it names and how
many bytes of each it uses; they read it with an unpickler that admits DCP's metadata classes, this
package's first-release commit records, torch's item locations, sizes and dtypes, the local path torch's
``FileSystemWriter`` records, and nothing else, so they are safe on checkpoints from anywhere.
"""

from __future__ import annotations

import io
import pickle
from typing import TYPE_CHECKING, Any

import torch

from s3_checkpoint_io.errors import CorruptCheckpointError

if TYPE_CHECKING:  # the DCP sub-package loads torch.distributed.checkpoint: only when a commit is read
    from s3_checkpoint_io.dcp._stored_items import CommittedCheckpoint

_ALLOWED_MODULES = ("torch.distributed.checkpoint.metadata", "s3_checkpoint_io.dcp._records")
_ALLOWED_TORCH = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    # torch's FileSystemWriter records its folder as StorageMeta.checkpoint_id, a Path (pathlib._local
    # from Python 3.13 on); making one runs no code beyond parsing the path
    *((module, name) for module in ("pathlib", "pathlib._local") for name in ("PosixPath", "PurePosixPath")),
}


class _CommitUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _ALLOWED_MODULES or (module, name) in _ALLOWED_TORCH:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a sharded checkpoint's commit")


def load_metadata(commit: bytes | bytearray, url: str) -> Any:
    """Unpickle a sharded checkpoint's ``.metadata`` without running arbitrary code.

    Args:
        commit: the ``.metadata`` object's bytes.
        url: where it came from, for messages.

    Returns:
        What it unpickled to (DCP's ``Metadata`` for a checkpoint).

    Raises:
        CorruptCheckpointError: if it needs a class a checkpoint's metadata has no place for.
    """
    try:
        return _CommitUnpickler(io.BytesIO(commit)).load()
    except Exception as exc:
        raise CorruptCheckpointError(f"{url} is not a readable sharded-checkpoint commit: {exc}") from exc


def read_commit(commit: bytes | bytearray, url: str) -> CommittedCheckpoint:
    """A sharded checkpoint's ``.metadata``, unpickled without running arbitrary code.

    Args:
        commit: the ``.metadata`` object's bytes.
        url: where it came from, for messages.

    Raises:
        CorruptCheckpointError: if the bytes are not DCP metadata this package can read.
    """
    from s3_checkpoint_io.dcp._stored_items import committed_checkpoint

    return committed_checkpoint(load_metadata(commit, url), url)


def shard_extents(commit: bytes | bytearray, url: str) -> dict[str, int]:
    """The shard objects a commit references, each with the bytes of it the checkpoint uses.

    Args:
        commit: the commit object's bytes.
        url: where it came from, for messages.

    Returns:
        ``{shard name under the prefix: end of the last item in it}``.

    Raises:
        CorruptCheckpointError: if the bytes are not DCP metadata this package can read.
    """
    return read_commit(commit, url).extents()
