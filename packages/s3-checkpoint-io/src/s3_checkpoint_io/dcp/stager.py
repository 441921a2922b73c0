"""``S3AsyncStager``: ``dcp.async_save`` staging into host buffers that are reused from save to save.

``dcp.async_save`` first stages the state (a copy that training may no longer change), then uploads
the copy in a background thread or process. Allocating that copy afresh every save costs as much as
copying it (page faults, and for pinned memory a slow registration). This stager keeps the copies:
a save whose state has the structure, shapes and dtypes of an earlier one copies into that earlier
save's buffers, once the earlier save no longer uses them.

torch's public ``DefaultStager`` does not keep buffers that way; why, and the private torch helpers
used instead, are in :mod:`s3_checkpoint_io.dcp.torch_internals`.
"""

from __future__ import annotations

import copy
import logging
import weakref
from typing import Any

import torch
from torch.distributed.checkpoint.staging import AsyncStager

from s3_checkpoint_io.dcp.torch_internals import (
    copy_into_host_buffers,
    host_buffers_like,
    tree_flatten,
    tree_map,
)

log = logging.getLogger(__name__)

STATE_DICT = dict[str, Any]


class _Staged(dict):  # type: ignore[type-arg]
    """The staged state handed to DCP; a weak reference to it tells when the save is done with it."""


class _BufferSet:
    """One set of host buffers (a state dict of CPU tensors) and the staged state now using it."""

    def __init__(self, buffers: STATE_DICT) -> None:
        self.buffers = buffers
        self.user: weakref.ref[_Staged] | None = None

    def in_use(self) -> bool:
        return self.user is not None and self.user() is not None


class S3AsyncStager(AsyncStager):
    """An ``AsyncStager`` for ``dcp.async_save`` that copies the state into reused host buffers.

    ``stage`` blocks until the copy is done (then training may change the state) and returns the
    copy, which ``dcp.async_save`` uploads in the background. Buffers are reused by a later save of
    the same structure, shapes and dtypes once no save in flight still reads them (the staged copy is
    no longer referenced): a save never overwrites bytes another save is uploading. Tensors are
    staged as CPU copies (DTensor and ShardedTensor keep their sharding); other values are deep-copied.

    Works with both of ``dcp.async_save``'s executors: ``AsyncCheckpointerType.THREAD`` (the default)
    and ``AsyncCheckpointerType.PROCESS`` (then ``share_memory=True`` hands the buffers to the
    background process without a copy through the pipe).

    Args:
        pin_memory: page-lock the buffers, for fast copies from a GPU; default: when CUDA is available.
        share_memory: put the buffers in shared memory (for the process executor).
        max_buffer_sets: how many sets of buffers to keep (one per save in flight at once); a save
            beyond them stages into buffers allocated for it alone.

    Raises:
        ValueError: if ``max_buffer_sets`` is less than 1.
    """

    _synchronize_after_execute = False

    def __init__(
        self, *, pin_memory: bool | None = None, share_memory: bool = False, max_buffer_sets: int = 2
    ) -> None:
        if max_buffer_sets < 1:
            raise ValueError(f"max_buffer_sets={max_buffer_sets} must be at least 1")
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.share_memory = share_memory
        self.max_buffer_sets = max_buffer_sets
        self._sets: list[_BufferSet] = []

    def __repr__(self) -> str:
        return (
            f"S3AsyncStager(pin_memory={self.pin_memory}, share_memory={self.share_memory}, "
            f"max_buffer_sets={self.max_buffer_sets}, buffer_sets={len(self._sets)})"
        )

    def stage(self, state_dict: STATE_DICT) -> STATE_DICT:
        """Copy ``state_dict`` into host buffers and return the copy (blocks until copied).

        Args:
            state_dict: the state to save (as ``dcp.async_save`` passes it).

        Returns:
            A copy that later changes to ``state_dict`` do not reach.
        """
        buffer_set = self._free_set_for(state_dict)
        copied = copy_into_host_buffers(state_dict, buffer_set.buffers)
        staged = _Staged(tree_map(_copy_if_not_tensor, copied))
        buffer_set.user = weakref.ref(staged)
        return staged

    def _free_set_for(self, state_dict: STATE_DICT) -> _BufferSet:
        """A kept buffer set that fits ``state_dict`` and no save uses, else a new one."""
        for buffer_set in self._sets:
            if not buffer_set.in_use() and _fits(state_dict, buffer_set.buffers):
                return buffer_set
        fresh = _BufferSet(
            host_buffers_like(state_dict, pin_memory=self.pin_memory, share_memory=self.share_memory)
        )
        if len(self._sets) < self.max_buffer_sets:
            self._sets.append(fresh)
        else:
            self._sets = [s for s in self._sets if s.in_use()] + [fresh]
            if len(self._sets) > self.max_buffer_sets:
                self._sets.pop()
                log.debug(
                    "S3AsyncStager: %d saves in flight; staging into one-off buffers", self.max_buffer_sets
                )
        return fresh

    def synchronize_staging(self) -> None:
        """Nothing to wait for: :meth:`stage` returns once the copy is done."""

    def close(self) -> None:
        """Drop the kept buffers (they are freed once no save in flight uses them)."""
        self._sets = []


def _fits(state_dict: STATE_DICT, buffers: STATE_DICT) -> bool:
    """Whether ``buffers`` has the structure of ``state_dict`` and tensors of the same dtypes and shapes.

    Not torch's ``_check_state_dict_similarity``: it copies every tensor into the buffers as it
    compares them, which doubled the stall of every staging (the copy is then made again).
    """
    leaves, spec = tree_flatten(state_dict)
    kept, kept_spec = tree_flatten(buffers)
    if spec != kept_spec:
        return False
    return all(
        not isinstance(value, torch.Tensor) or _same_kind(value, buffer)
        for value, buffer in zip(leaves, kept, strict=True)
    )


def _same_kind(tensor: torch.Tensor, buffer: Any) -> bool:
    if not isinstance(buffer, torch.Tensor):
        return False
    return buffer.dtype == tensor.dtype and buffer.size() == tensor.size()


def _copy_if_not_tensor(value: Any) -> Any:
    return value if isinstance(value, torch.Tensor) else copy.deepcopy(value)
