"""A consistent copy of a checkpoint dict, so training may go on mutating the original.

Tensors are copied storage by storage, so views that share memory (tied weights, slices) still share
it in the copy, exactly as ``torch.save`` would have written the original. Every storage is copied into
a host buffer taken from a :class:`HostBufferPool` (shared memory another process can map,
page-locked for CUDA storages), which keeps the buffers between saves: after the first save a
snapshot is a plain memory copy into pages that are already mapped, with no allocation and no page
faults, which is why it is cheaper than a bare ``clone()`` of the same tensors.
"""

from __future__ import annotations

import copy
import enum
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from s3_checkpoint_io.background.host_buffers import HostBufferPool

__all__ = ["HostBufferPool", "Snapshot", "take_snapshot", "wait_for_device_copies"]

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


@dataclass
class Snapshot:
    """The copied state, how many tensor bytes were copied, and the pool buffers it borrows.

    Attributes:
        devices: the accelerator devices tensors were copied from; the snapshot waited for the copies
            on each of them.
    """

    state: Any
    tensor_bytes: int = 0
    borrowed: list[torch.Tensor] = field(default_factory=list)
    devices: frozenset[torch.device] = frozenset()


class _Copier:
    def __init__(self, pool: HostBufferPool | None) -> None:
        self._pool = pool
        # id(original) -> its copy, shared with copy.deepcopy: an object reached twice is copied once,
        # as pickle (and so torch.save) writes it once.
        self._memo: dict[int, Any] = {}
        # Keyed by the storage itself (its StorageImpl, as torch.save keys them), not its address: two
        # storages may start at the same address, e.g. torch.from_numpy(a[:8]) and torch.from_numpy(a).
        self._storages: dict[int, torch.UntypedStorage] = {}
        self.snapshot = Snapshot(state=None)
        self.devices: set[torch.device] = set()

    def copy(self, obj: Any, where: str) -> Any:
        if isinstance(obj, _ATOMIC):
            return obj
        if id(obj) in self._memo:
            return self._memo[id(obj)]
        if isinstance(obj, torch.Tensor):
            new: Any = self._tensor(obj, where)
        elif isinstance(obj, dict):
            new = self._memo[id(obj)] = copy.copy(obj)
            for key, value in obj.items():
                new[key] = self.copy(value, f"{where}[{key!r}]")
        elif isinstance(obj, list):
            new = self._memo[id(obj)] = copy.copy(obj)
            new[:] = [self.copy(value, f"{where}[{i}]") for i, value in enumerate(obj)]
        elif isinstance(obj, tuple):
            items = [self.copy(value, f"{where}[{i}]") for i, value in enumerate(obj)]
            new = type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
        else:
            try:
                new = copy.deepcopy(obj, self._memo)
            except Exception as exc:
                raise _cannot_snapshot(where, obj, exc) from exc
        self._memo[id(obj)] = new
        return new

    def _tensor(self, tensor: torch.Tensor, where: str) -> torch.Tensor:
        if not _is_plain(tensor):
            return _through_torch_save(tensor, where)
        plain = tensor.detach()
        copied = torch.empty((0,), dtype=plain.dtype).set_(
            self._storage(plain), plain.storage_offset(), plain.size(), plain.stride()
        )
        # Lazy conjugate and negative views keep their bit: the storage holds the unresolved values.
        if plain.is_conj():
            copied = copied.conj()
        if plain.is_neg():
            copied = torch._neg_view(copied)
        if isinstance(tensor, torch.nn.Parameter):
            return torch.nn.Parameter(copied, requires_grad=tensor.requires_grad)
        return copied.requires_grad_(tensor.requires_grad)

    def _storage(self, tensor: torch.Tensor) -> torch.UntypedStorage:
        source = tensor.untyped_storage()
        found = self._storages.get(source._cdata)
        if found is not None:
            return found
        nbytes = source.nbytes()
        if self._pool is not None:
            buffer = self._pool.take(nbytes, pinned=tensor.is_cuda)
            self.snapshot.borrowed.append(buffer)
            buffer.untyped_storage().copy_(source, non_blocking=tensor.is_cuda)
            if tensor.is_cuda:
                self.devices.add(tensor.device)
            copied = buffer.untyped_storage()
        elif tensor.is_cuda:
            raise ValueError("a CUDA tensor needs a host buffer pool to be snapshotted")
        else:
            copied = source.clone()  # type: ignore[no-untyped-call]
        self._storages[source._cdata] = copied
        self.snapshot.tensor_bytes += nbytes
        return copied


def _is_plain(tensor: torch.Tensor) -> bool:
    """Whether the storage-by-storage copy reproduces ``tensor`` exactly (dense CPU/CUDA data)."""
    return (
        type(tensor) in (torch.Tensor, torch.nn.Parameter)
        and tensor.layout == torch.strided
        and tensor.device.type in ("cpu", "cuda")
        and not (tensor.is_quantized or tensor.is_nested or tensor.is_meta)
        and not vars(tensor)  # extra attributes, which torch.save also writes
    )


def _through_torch_save(tensor: torch.Tensor, where: str) -> torch.Tensor:
    # Quantized, nested, sparse and subclassed tensors (rare in checkpoints): a round trip through
    # torch.save is exactly what a synchronous save would write, whatever the tensor holds.
    buffer = io.BytesIO()
    try:
        torch.save(tensor, buffer)
        buffer.seek(0)
        copied: torch.Tensor = torch.load(buffer, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _cannot_snapshot(where, tensor, exc) from exc
    return copied


def _cannot_snapshot(where: str, obj: object, exc: Exception) -> TypeError:
    return TypeError(
        f"cannot snapshot checkpoint{where} ({type(obj).__name__}) for an asynchronous save: {exc}. "
        "Keep only tensors, containers and picklable values in the checkpoint, or save synchronously"
    )


def take_snapshot(state: Any, pool: HostBufferPool | None) -> Snapshot:
    """Copy ``state`` so that later in-place changes to its tensors do not reach the copy.

    The copy is what ``torch.save`` would have written for ``state``: containers (dict and its
    subclasses, list, tuple, named tuples) are rebuilt with the same types; tensors are copied storage
    by storage (CUDA ones into page-locked buffers from ``pool``, waiting on every device copied from),
    keeping views, offsets, strides, shared storages and conjugate/negative bits; quantized, nested,
    sparse and subclassed tensors go through ``torch.save``; immutable leaves are shared; any other
    object is deep-copied. An object reached twice is copied once.

    Args:
        state: the checkpoint, usually a dict.
        pool: reusable host buffers; None clones CPU tensors (and refuses CUDA ones).

    Returns:
        The snapshot; give ``snapshot.borrowed`` back to ``pool`` once it has been written.

    Raises:
        TypeError: naming the entry (its key path in ``state``), if an object in it cannot be copied.
    """
    copier = _Copier(pool)
    try:
        copier.snapshot.state = copier.copy(state, "")
    except BaseException:
        wait_for_device_copies(copier.devices)  # before the buffers being written into are reused
        if pool is not None:
            pool.give_back(copier.snapshot.borrowed)
        raise
    # The copies must land before training may change the tensors again.
    wait_for_device_copies(copier.devices)
    copier.snapshot.devices = frozenset(copier.devices)
    if pool is not None:
        pool.trim()  # what this snapshot did not reuse belongs to tensors that no longer exist
    return copier.snapshot


def wait_for_device_copies(devices: Iterable[torch.device]) -> None:
    """Wait until the device-to-host copies queued on each CUDA device's current stream are done.

    A copy runs on the stream of the device it reads from, so waiting on the current device alone
    would return while copies from the others are still being written into the snapshot.
    """
    for device in devices:
        torch.cuda.current_stream(device).synchronize()
