"""Every private torch function this package calls, in one place, with the torch versions it is tested on.

``S3AsyncStager`` copies a state dict into host buffers kept from an earlier save. torch has the two
steps only as private helpers of ``torch.distributed._state_dict_utils`` (they handle DTensor and
ShardedTensor, pinned and shared memory). torch 2.13's public ``DefaultStager`` / ``StagingOptions``
do not fit (measured on 2.13.0 CPU with every ``StagingOptions`` flag off; pinned by
``tests/checkpoint_io/dcp/test_dcp_public_stager_gaps.py``):

- its cache is keyed by the *source* storage, so the next save of the same tensors copies into the
  buffers a save still in flight is uploading (it has no notion of a save holding them);
- a state dict of new tensors with the same shapes never reuses a buffer: the cache entry dies with
  the source tensor;
- (it does copy each tensor once, two ``aten::copy_`` for two tensors, as ours does.)

A torch upgrade that moves or renames these fails here, at import, naming the installed version.
"""

from __future__ import annotations

from typing import Any

import torch

TESTED_TORCH_VERSIONS = ("2.13.0",)
"""The torch versions whose private helpers below the test suite runs against."""

try:
    from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict
    from torch.utils._pytree import tree_flatten, tree_map
except ImportError as exc:  # pragma: no cover - only on an untested torch
    raise ImportError(
        f"s3_checkpoint_io.dcp.S3AsyncStager needs torch's private state-dict helpers, which torch "
        f"{torch.__version__} does not have as tested on torch {', '.join(TESTED_TORCH_VERSIONS)} ({exc})"
    ) from exc

__all__ = ["TESTED_TORCH_VERSIONS", "copy_into_host_buffers", "host_buffers_like", "tree_flatten", "tree_map"]


def host_buffers_like(state_dict: dict[str, Any], *, pin_memory: bool, share_memory: bool) -> dict[str, Any]:
    """New CPU tensors of ``state_dict``'s structure, dtypes and shapes (DTensor, ShardedTensor kept).

    torch's ``_create_cpu_state_dict`` (private, tested on :data:`TESTED_TORCH_VERSIONS`).
    """
    buffers: dict[str, Any] = _create_cpu_state_dict(state_dict, pin_memory, share_memory)
    return buffers


def copy_into_host_buffers(state_dict: dict[str, Any], buffers: dict[str, Any]) -> dict[str, Any]:
    """Copy every tensor of ``state_dict`` into ``buffers`` (blocking) and return ``buffers``' state.

    torch's ``_copy_state_dict`` without its type check (private, tested on
    :data:`TESTED_TORCH_VERSIONS`); non-tensor values come back as ``state_dict`` holds them.
    """
    copied: dict[str, Any] = _copy_state_dict(state_dict, buffers, non_blocking=False, type_check=False)
    return copied
