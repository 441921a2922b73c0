"""Where each item of a committed DCP checkpoint lies, for every layout this package reads.

Three layouts of ``.metadata`` exist, and this module is the one place that tells them apart:

- **ours** (written from format 2 on): torch's own layout. ``storage_data`` maps each item's
  ``MetadataIndex`` to torch's ``_StorageInfo`` (object name, offset, length), every tensor item is a
  ``torch.save`` stream as torch's ``FileSystemWriter`` writes it, and ``storage_meta`` carries the save
  id (its own ``save_id`` field) and, in one extra attribute of plain builtins that torch's readers
  ignore, where each tensor's raw elements start inside its stream, so that our reader can fetch them
  with ranged GETs straight into the destination.
- **ours, format 1** (the first release): ``storage_data`` is a :class:`~._records.CommitRecord` and
  tensors are raw bytes. Read only, so that those checkpoints keep loading.
- **stock**: what torch's ``FileSystemWriter``/``FsspecWriter`` and s3torchconnector write. The same as
  ours without the extra attribute: a tensor's raw bytes are found by ``torch.load`` of its stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorStorageMetadata,
)

from s3_checkpoint_io.dcp._records import CommitRecord
from s3_checkpoint_io.errors import CorruptCheckpointError

OURS = "s3-checkpoint-io"
OURS_FORMAT_1 = "s3-checkpoint-io (format 1)"
STOCK = "torch DCP"
FORMAT = 2
"""The layout version :class:`~s3_checkpoint_io.dcp.S3StorageWriter` writes now."""
EXTRA_ATTRIBUTE = "s3_checkpoint_io"
"""The attribute of ``StorageMeta`` that holds what torch's fields have no place for (plain builtins:
``{"format": 2, "raw_offsets": {object name: {item offset: offset of its raw elements}}}``)."""


@dataclass(frozen=True)
class StoredItem:
    """One item's bytes in its object.

    Attributes:
        name: the object's name under the checkpoint prefix.
        offset: first byte of the item.
        length: the item's bytes.
        raw_offset: for a tensor, where its raw C-contiguous elements start in the object; None where a
            ``torch.save`` stream must be loaded to find them (stock checkpoints), and for byte items.
        dtype: for a tensor, its element type.
        shape: for a tensor, the stored piece's shape (a chunk of the whole tensor).
    """

    name: str
    offset: int
    length: int
    raw_offset: int | None = None
    dtype: torch.dtype | None = None
    shape: tuple[int, ...] | None = None

    @property
    def end(self) -> int:
        """One past the item's last byte."""
        return self.offset + self.length

    @property
    def is_tensor(self) -> bool:
        """Whether the item is a tensor piece (else a byte stream)."""
        return self.dtype is not None


@dataclass(frozen=True)
class CommittedCheckpoint:
    """What a ``.metadata`` says: its layout, the save it commits, and where every item is.

    Attributes:
        kind: :data:`OURS`, :data:`OURS_FORMAT_1` or :data:`STOCK`.
        save_id: the save that wrote the shards (None for stock checkpoints: they name none we check).
        items: every stored item.
    """

    kind: str
    save_id: str | None
    items: dict[MetadataIndex, StoredItem]
    tensor_metadata: dict[str, TensorStorageMetadata]
    """Every tensor's global dtype, shape and chunks, by its flattened key (from the metadata)."""

    def tensors(self) -> list[tuple[str, torch.dtype, tuple[int, ...], int]]:
        """``(key, dtype, global shape, bytes)`` of every tensor, sorted by key."""
        return [
            (
                name,
                meta.properties.dtype,
                tuple(meta.size),
                meta.size.numel() * meta.properties.dtype.itemsize,
            )
            for name, meta in sorted(self.tensor_metadata.items())
        ]

    @property
    def shard_names(self) -> tuple[str, ...]:
        """Every object the checkpoint needs beside its ``.metadata``, sorted."""
        return tuple(sorted({item.name for item in self.items.values()}))

    def extents(self) -> dict[str, int]:
        """``{object name: end of the last item in it}``: how many bytes of each object are used."""
        extents = dict.fromkeys(self.shard_names, 0)
        for item in self.items.values():
            extents[item.name] = max(extents[item.name], item.end)
        return extents


def committed_checkpoint(metadata: Any, url: str) -> CommittedCheckpoint:
    """Read ``metadata`` (an unpickled ``.metadata``) into a :class:`CommittedCheckpoint`.

    Args:
        metadata: what the ``.metadata`` object unpickled to.
        url: where it came from, for messages.

    Raises:
        CorruptCheckpointError: if it is not DCP metadata, names an item it has no storage for, or uses
            a DCP storage extension (a transform such as compression) that this reader cannot undo.
    """
    if not isinstance(metadata, Metadata):
        raise CorruptCheckpointError(
            f"{url} is not DCP metadata (it holds a {type(metadata).__name__}): is this a sharded checkpoint?"
        )
    storage = metadata.storage_data
    if isinstance(storage, CommitRecord):
        items = {
            index: StoredItem(
                loc.name, loc.offset, loc.length, loc.offset if loc.dtype else None, loc.dtype, loc.shape
            )
            for index, loc in storage.locations.items()
        }
        return CommittedCheckpoint(OURS_FORMAT_1, storage.save_id, items, _tensor_metadata(metadata))
    if not isinstance(storage, dict) or not all(isinstance(info, _StorageInfo) for info in storage.values()):
        raise CorruptCheckpointError(
            f"{url}: its storage_data is a {type(storage).__name__}, not the map of item locations that "
            "torch's FileSystemWriter, FsspecWriter, s3torchconnector and S3StorageWriter write; which "
            "writer made it?"
        )
    extra = _extra_of(metadata.storage_meta)
    raw_offsets: dict[str, dict[int, int]] = extra.get("raw_offsets", {}) if extra else {}
    items = {}
    for index, info in storage.items():
        if info.transform_descriptors:
            raise CorruptCheckpointError(
                f"{url}: item {index.fqn} was written through DCP storage extensions "
                f"{list(info.transform_descriptors)}; load it with torch's FileSystemReader"
            )
        dtype, shape = _tensor_piece(metadata, index, url)
        raw = raw_offsets.get(info.relative_path, {}).get(info.offset) if dtype is not None else None
        items[index] = StoredItem(info.relative_path, info.offset, info.length, raw, dtype, shape)
    if extra:
        save_id = metadata.storage_meta.save_id if metadata.storage_meta else None
        return CommittedCheckpoint(OURS, save_id, items, _tensor_metadata(metadata))
    return CommittedCheckpoint(STOCK, None, items, _tensor_metadata(metadata))


def storage_meta_with_layout(
    storage_meta: StorageMeta | None, save_id: str, raw_offsets: dict[str, dict[int, int]]
) -> StorageMeta:
    """``storage_meta`` (or a new one) carrying our save id and the tensors' raw offsets."""
    meta = storage_meta if storage_meta is not None else StorageMeta()
    meta.save_id = save_id
    setattr(meta, EXTRA_ATTRIBUTE, {"format": FORMAT, "raw_offsets": raw_offsets})
    return meta


def _tensor_metadata(metadata: Metadata) -> dict[str, TensorStorageMetadata]:
    return {
        name: entry
        for name, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, TensorStorageMetadata)
    }


def _extra_of(storage_meta: StorageMeta | None) -> dict[str, Any] | None:
    extra = getattr(storage_meta, EXTRA_ATTRIBUTE, None)
    return extra if isinstance(extra, dict) else None


def _tensor_piece(
    metadata: Metadata, index: MetadataIndex, url: str
) -> tuple[torch.dtype | None, tuple[int, ...] | None]:
    """The dtype and stored shape of the tensor piece ``index`` (None, None for a byte item)."""
    entry = metadata.state_dict_metadata.get(index.fqn)
    if isinstance(entry, BytesStorageMetadata):
        return None, None
    if not isinstance(entry, TensorStorageMetadata):
        raise CorruptCheckpointError(
            f"{url} stores {index.fqn} but does not describe it: the metadata is damaged"
        )
    chunks = entry.chunks
    if index.index is not None and index.index < len(chunks) and chunks[index.index].offsets == index.offset:
        return entry.properties.dtype, tuple(chunks[index.index].sizes)
    for chunk in chunks:
        if chunk.offsets == index.offset:
            return entry.properties.dtype, tuple(chunk.sizes)
    raise CorruptCheckpointError(
        f"{url} stores a piece of {index.fqn} at {list(index.offset or ())} that it does not describe"
    )
