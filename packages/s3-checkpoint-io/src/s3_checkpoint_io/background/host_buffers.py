"""Host buffers for snapshots, carved out of a few large shared-memory slabs another process can map.

A snapshot copies every storage into a buffer of its exact size (see
:mod:`~s3_checkpoint_io.background.snapshot`). Buffers are kept between saves, keyed by (size, pinned), so
after the first save a snapshot is a plain memory copy into pages that are already mapped. They are carved
out of slabs: anonymous in-memory files (Linux ``memfd``) mapped shared, so the upload process maps the
same pages from the slab's file descriptor and reads the snapshot without a copy. One descriptor per slab,
not per storage: a model with thousands of tensors still passes a handful of descriptors (the default
limit is 1,024 per process).

A slab's size is virtual: its pages are allocated when first written and freed (``MADV_REMOVE``) when
the buffers on them are dropped, so a 1 GiB slab holding a 4 KiB buffer costs 4 KiB. Buffers for CUDA
tensors are page-aligned and page-locked with ``cudaHostRegister``, so device-to-host copies into them
run asynchronously as with ``pin_memory=True`` tensors. Where there is no ``memfd`` (not Linux) the
slabs are anonymous shared mappings, which only this process (and its forks) can read.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import threading
from dataclasses import dataclass

import torch

SLAB_BYTES = 1 << 30
"""Virtual size of a slab (pages cost memory only once written); a larger buffer gets a slab of its own."""
_ALIGN = 64  # cache line: copies into a buffer start aligned for every dtype
_slab_ids = itertools.count(1)


def shared_slabs_supported() -> bool:
    """Whether slabs are in-memory files another process can map (Linux ``memfd``)."""
    return hasattr(os, "memfd_create")


class Slab:
    """One shared mapping that buffers are carved from, front to back.

    Attributes:
        id: unique in this process; how the upload process names the slab.
        size: bytes mapped.
        fd: the in-memory file's descriptor (-1 where there is no ``memfd``); pass it to the upload
            process, which maps the same pages.
    """

    def __init__(self, size: int) -> None:
        self.id = next(_slab_ids)
        self.size = size
        self.fd = -1
        if shared_slabs_supported():
            self.fd = os.memfd_create(f"s3-checkpoint-snapshot-{self.id}", os.MFD_CLOEXEC)
            try:
                os.ftruncate(self.fd, size)
                self.map = mmap.mmap(self.fd, size)
            except BaseException:
                os.close(self.fd)
                raise
        else:
            self.map = mmap.mmap(-1, size)
        self.address = torch.frombuffer(self.map, dtype=torch.uint8, count=1).data_ptr()
        self.used = 0  # bytes carved so far (the bump pointer)
        self.live = 0  # buffers carved and not dropped yet

    def carve(self, nbytes: int, align: int) -> torch.Tensor | None:
        """A ``uint8`` tensor over the next ``nbytes`` free bytes (its own storage), or None if full."""
        start = -(-self.used // align) * align
        if start + nbytes > self.size:
            return None
        self.used = start + nbytes
        self.live += 1
        return torch.frombuffer(self.map, dtype=torch.uint8, count=nbytes, offset=start)

    def offset_of(self, address: int) -> int | None:
        """Where ``address`` lies in this slab, or None if outside it."""
        offset = address - self.address
        return offset if 0 <= offset < self.size else None

    def free_pages(self, offset: int, nbytes: int) -> None:
        """Give the whole pages inside ``[offset, offset + nbytes)`` back to the system (best effort)."""
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and self.fd >= 0:
            with contextlib.suppress(OSError):  # the pages then stay until the slab is dropped
                self.map.madvise(mmap.MADV_REMOVE, start, end - start)

    def close(self) -> None:
        """Close the descriptor; the mapping is freed once no buffer carved from it is left."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class SlabRegion:
    """Where one buffer lies: ``nbytes`` bytes at ``offset`` in the slab ``slab_id``."""

    slab_id: int
    offset: int
    nbytes: int


class HostBufferPool:
    """Host buffers reused between saves, carved from shared slabs, page-locked for CUDA; thread-safe.

    A snapshot takes what it needs with :meth:`take`, the background save gives them back with
    :meth:`give_back` once the bytes are in S3, and :meth:`trim` drops free buffers the latest snapshot
    did not need (the model's tensors changed), so the pool holds at most what the snapshots in flight
    use. A slab whose buffers are all dropped is closed.
    """

    def __init__(self) -> None:
        self._free: dict[tuple[int, bool], list[torch.Tensor]] = {}
        self._slabs: list[Slab] = []
        # data_ptr -> (slab, buffer, pinned) of every buffer carved and not dropped
        self._regions: dict[int, tuple[Slab, torch.Tensor, bool]] = {}
        self._lock = threading.Lock()

    def take(self, nbytes: int, pinned: bool) -> torch.Tensor:
        """A ``uint8`` buffer of exactly ``nbytes`` bytes (page-locked if ``pinned``), reused if free."""
        with self._lock:
            free = self._free.get((nbytes, pinned))
            if free:
                return free.pop()
            if nbytes == 0:
                return torch.empty(0, dtype=torch.uint8)
            return self._carve(nbytes, pinned)

    def _carve(self, nbytes: int, pinned: bool) -> torch.Tensor:
        align = mmap.PAGESIZE if pinned else _ALIGN  # registration works on whole pages
        size = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
        buffer = self._slabs[-1].carve(nbytes, align) if self._slabs else None
        if buffer is None:
            self._slabs.append(Slab(max(SLAB_BYTES, size)))
            buffer = self._slabs[-1].carve(nbytes, align)
            assert buffer is not None
        if pinned:
            _register(buffer, size)
        self._regions[buffer.data_ptr()] = (self._slabs[-1], buffer, pinned)
        return buffer

    def give_back(self, buffers: list[torch.Tensor]) -> None:
        """Return buffers taken with :meth:`take` for later saves."""
        with self._lock:
            for buffer in buffers:
                found = self._regions.get(buffer.data_ptr())
                pinned = found is not None and found[2]
                self._free.setdefault((buffer.numel(), pinned), []).append(buffer)

    def trim(self) -> None:
        """Drop every free buffer and free its pages; taken ones are kept."""
        with self._lock:
            free, self._free = self._free, {}
            for buffers in free.values():
                for buffer in buffers:
                    self._drop(buffer)

    def _drop(self, buffer: torch.Tensor) -> None:
        found = self._regions.pop(buffer.data_ptr(), None)
        if found is None:
            return  # an empty buffer, not carved
        slab, _, pinned = found
        if pinned:
            _unregister(buffer)
        offset = slab.offset_of(buffer.data_ptr())
        assert offset is not None
        slab.free_pages(offset, buffer.numel())
        slab.live -= 1
        if slab.live == 0:
            if slab is self._slabs[-1]:
                slab.used = 0  # carve from the front again
            else:
                self._slabs.remove(slab)
                slab.close()

    def region_of(self, storage: torch.UntypedStorage) -> SlabRegion | None:
        """Where a buffer's storage lies in the slabs, or None if it is not a buffer of this pool."""
        with self._lock:
            found = self._regions.get(storage.data_ptr())
            if found is None or found[1].numel() != storage.nbytes():
                return None
            slab = found[0]
            offset = slab.offset_of(storage.data_ptr())
            assert offset is not None
            return SlabRegion(slab.id, offset, storage.nbytes())

    def slabs(self) -> dict[int, Slab]:
        """The live slabs by id (for handing their descriptors to the upload process)."""
        with self._lock:
            return {slab.id: slab for slab in self._slabs}


# Page-locking through the CUDA runtime (no device here to test it on; the calls are the ones
# torch.cuda.cudart() exposes, and the registration is undone before the pages are freed).
_CUDA_HOST_REGISTER_DEFAULT = 0


def _register(buffer: torch.Tensor, size: int) -> None:
    cudart = torch.cuda.cudart()  # type: ignore[no-untyped-call]
    code = cudart.cudaHostRegister(buffer.data_ptr(), size, _CUDA_HOST_REGISTER_DEFAULT)
    if int(code) != 0:
        raise RuntimeError(f"cudaHostRegister of a {size}-byte snapshot buffer failed with CUDA error {code}")


def _unregister(buffer: torch.Tensor) -> None:
    torch.cuda.cudart().cudaHostUnregister(buffer.data_ptr())  # type: ignore[no-untyped-call]
