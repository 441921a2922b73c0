"""A consistent copy of a checkpoint dict, so training may go on mutating the original.

Tensors are copied storage by storage, so views that share memory (tied weights, slices) still share
it in the copy, exactly as ``torch.save`` would have written the original. Every storage is copied into
a host buffer taken from a :class:`HostBufferPool` (page-locked for CUDA storages), which keeps the
buffers between saves: after the first save a snapshot is a plain memory copy into pages that are
already mapped, with no allocation and no page faults, which is why it is cheaper than a bare
``clone()`` of the same tensors.
"""

from __future__ import annotations

import copy
import enum
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

_ATOMIC = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    torch.dtype,
    torch.device,
    torch.Size,
    enum.Enum,
)


class HostBufferPool:
    """Host buffers reused between saves, page-locked ones for CUDA storages; thread-safe.

    Buffers are ``uint8`` tensors kept by (size, pinned). A snapshot takes what it needs with
    :meth:`take`, the background save gives them back with :meth:`give_back` once the bytes are in S3,
    and :meth:`trim` drops free buffers the latest snapshot did not need (the model's tensors changed),
    so the pool holds at most what the snapshots in flight use.
    """

    def __init__(self) -> None:
        self._free: dict[tuple[int, bool], list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, nbytes: int, pinned: bool) -> torch.Tensor:
        """A ``uint8`` buffer of exactly ``nbytes`` bytes (page-locked if ``pinned``), reused if free."""
        with self._lock:
            free = self._free.get((nbytes, pinned))
            if free:
                return free.pop()
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)

    def give_back(self, buffers: list[torch.Tensor]) -> None:
        """Return buffers taken with :meth:`take` for later saves."""
        with self._lock:
            for buffer in buffers:
                self._free.setdefault((buffer.numel(), buffer.is_pinned()), []).append(buffer)

    def trim(self) -> None:
        """Drop every free buffer (memory is released when garbage-collected); taken ones are kept."""
        with self._lock:
            self._free.clear()


@dataclass
class Snapshot:
    """The copied state, how many tensor bytes were copied, and the pool buffers it borrows."""

    state: Any
    tensor_bytes: int = 0
    borrowed: list[torch.Tensor] = field(default_factory=list)


class _Copier:
    def __init__(self, pool: HostBufferPool | None) -> None:
        self._pool = pool
        self._storages: dict[tuple[str, int], torch.UntypedStorage] = {}
        self.snapshot = Snapshot(state=None)
        self.cuda_used = False

    def copy(self, obj: Any, where: str) -> Any:
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj)
        if isinstance(obj, _ATOMIC):
            return obj
        if isinstance(obj, dict):
            new = copy.copy(obj)
            for key, value in obj.items():
                new[key] = self.copy(value, f"{where}[{key!r}]")
            return new
        if isinstance(obj, list):
            new_list = copy.copy(obj)
            new_list[:] = [self.copy(value, f"{where}[{i}]") for i, value in enumerate(obj)]
            return new_list
        if isinstance(obj, tuple):
            items = [self.copy(value, f"{where}[{i}]") for i, value in enumerate(obj)]
            return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
        try:
            return copy.deepcopy(obj)
        except Exception as exc:
            raise TypeError(
                f"cannot snapshot checkpoint{where} ({type(obj).__name__}) for an asynchronous save: {exc}. "
                "Keep only tensors, containers and picklable values in the checkpoint, or save synchronously"
            ) from exc

    def _tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        plain = tensor.detach()
        if plain.layout != torch.strided or plain.is_meta or type(plain) is not torch.Tensor:
            copied = plain.to("cpu", copy=True) if plain.is_cuda else plain.clone()
            self.snapshot.tensor_bytes += copied.numel() * copied.element_size()
        else:
            storage = self._storage(plain)
            copied = torch.empty((0,), dtype=plain.dtype).set_(
                storage, plain.storage_offset(), plain.size(), plain.stride()
            )
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(copied, requires_grad=tensor.requires_grad)
        return copied

    def _storage(self, tensor: torch.Tensor) -> torch.UntypedStorage:
        source = tensor.untyped_storage()
        key = (str(tensor.device), source.data_ptr())
        found = self._storages.get(key)
        if found is not None:
            return found
        nbytes = source.nbytes()
        if self._pool is not None:
            buffer = self._pool.take(nbytes, pinned=tensor.is_cuda)
            self.snapshot.borrowed.append(buffer)
            buffer.untyped_storage().copy_(source, non_blocking=tensor.is_cuda)
            self.cuda_used = self.cuda_used or tensor.is_cuda
            copied = buffer.untyped_storage()
        elif tensor.is_cuda:
            raise ValueError("a CUDA tensor needs a host buffer pool to be snapshotted")
        else:
            copied = source.clone()  # type: ignore[no-untyped-call]
        self._storages[key] = copied
        self.snapshot.tensor_bytes += nbytes
        return copied


def take_snapshot(state: Any, pool: HostBufferPool | None) -> Snapshot:
    """Copy ``state`` so that later in-place changes to its tensors do not reach the copy.

    Containers (dict and its subclasses, list, tuple, named tuples) are rebuilt with the same types;
    tensors are copied into buffers from ``pool`` (CUDA ones into page-locked memory, synchronised
    before returning), or cloned when there is no pool; immutable leaves are shared; any other object is
    deep-copied.

    Args:
        state: the checkpoint, usually a dict.
        pool: reusable host buffers; None clones CPU tensors (and refuses CUDA ones).

    Returns:
        The snapshot; give ``snapshot.borrowed`` back to ``pool`` once it has been written.

    Raises:
        TypeError: naming the entry, if an object in the checkpoint cannot be copied.
    """
    copier = _Copier(pool)
    try:
        copier.snapshot.state = copier.copy(state, "")
    except BaseException:
        if pool is not None and copier.snapshot.borrowed:
            _synchronize_cuda(copier.cuda_used)
            pool.give_back(copier.snapshot.borrowed)
        raise
    _synchronize_cuda(copier.cuda_used)
    if pool is not None:
        pool.trim()  # what this snapshot did not reuse belongs to tensors that no longer exist
    return copier.snapshot


def _synchronize_cuda(used: bool) -> None:
    # The non-blocking device-to-host copies must land before training may touch the tensors again.
    if used:
        torch.cuda.synchronize()
