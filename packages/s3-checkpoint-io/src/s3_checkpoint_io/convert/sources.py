"""What a conversion reads: a sharded (DCP) checkpoint, or one ``torch.save`` file, as named tensors.

Both kinds answer the same questions: which tensors there are (:class:`TensorEntry`, known before any
tensor byte is read) and one whole tensor at a time (:meth:`Source.read_tensor`). A sharded
checkpoint is read from its commit alone up front; each tensor is then assembled from ranged reads of
the shards, every stored chunk into its slice of one full-tensor buffer, so memory follows the
tensor, not the model. A single file has no index of its tensors that can be read without loading
it, so it is loaded whole.
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from s3_checkpoint_io.convert._tensor_bytes import byte_view
from s3_checkpoint_io.convert.errors import IncompleteCheckpointError, SourceNotFoundError
from s3_checkpoint_io.convert.locations import Location, location_of, parent_and_name
from s3_checkpoint_io.convert.tensor_entries import TensorEntry, flatten
from s3_checkpoint_io.dcp._stored_items import CommittedCheckpoint, StoredItem, committed_checkpoint
from s3_checkpoint_io.dcp.commit_references import load_metadata
from s3_checkpoint_io.engine.load import load_from_buffer
from s3_checkpoint_io.errors import CorruptCheckpointError, WeightsOnlyLoadError
from s3_utils import S3Store
from s3_utils.sharded import COMMIT_NAME

_TORCH_SAVE_MAGIC = (b"PK\x03\x04",)  # torch.save's zip format
_LEGACY_PICKLE = 0x80
_HEAD_CHECKS = 8
"""Shard objects checked for existence at once."""


class Source(Protocol):
    """A checkpoint opened for conversion."""

    url: str
    kind: str
    """``"sharded (<layout>)"`` or ``"torch.save file"``, for messages."""

    def tensors(self) -> list[TensorEntry]:
        """Every tensor, in key order."""
        ...

    def read_tensor(self, key: str) -> torch.Tensor:
        """The whole tensor ``key`` (a contiguous CPU tensor of its stored dtype)."""
        ...

    def read_state(self) -> dict[str, Any]:
        """The whole nested state, as ``torch.load`` of one file would give it."""
        ...


class ShardedSource:
    """A committed DCP checkpoint: its ``.metadata`` says where every chunk of every tensor lies.

    Args:
        location: the checkpoint's prefix or folder.
        commit: the ``.metadata`` bytes.
        trust: allow byte items (arbitrary pickled objects) to unpickle fully in :meth:`read_state`.

    Raises:
        CorruptCheckpointError: if the commit is not DCP metadata this package reads.
    """

    def __init__(self, location: Location, commit: bytes | bytearray, trust: bool = False) -> None:
        self.location = location
        self.url = location.url("")
        self.trust = trust
        metadata = load_metadata(commit, location.url(COMMIT_NAME))
        self.checkpoint: CommittedCheckpoint = committed_checkpoint(metadata, location.url(COMMIT_NAME))
        self.kind = f"sharded ({self.checkpoint.kind})"
        self._paths: Mapping[str, tuple[str | int, ...]] = metadata.planner_data or {}
        self._pieces: dict[str, list[tuple[tuple[int, ...], StoredItem]]] = {}
        self._bytes_items: dict[str, StoredItem] = {}
        for index, item in self.checkpoint.items.items():
            if item.is_tensor:
                self._pieces.setdefault(index.fqn, []).append((tuple(index.offset or ()), item))
            else:
                self._bytes_items[index.fqn] = item

    def check_shards(self) -> None:
        """Check that every shard object the commit names exists and holds all its items (HEADs only).

        Raises:
            IncompleteCheckpointError: naming the first missing or short shards.
        """
        extents = self.checkpoint.extents()
        with ThreadPoolExecutor(max_workers=_HEAD_CHECKS, thread_name_prefix="s3ckpt-convert-head") as pool:
            sizes = dict(zip(extents, pool.map(self.location.size, extents), strict=True))
        problems = [
            f"{name} ({'missing' if sizes[name] is None else f'{sizes[name]} bytes, needs {needed}'})"
            for name, needed in extents.items()
            if sizes[name] is None or (sizes[name] or 0) < needed
        ]
        if problems:
            shown = ", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise IncompleteCheckpointError(
                f"{self.url} is incomplete: its commit references {len(problems)} of {len(extents)} shard "
                f"objects that are missing or short: {shown}. Copy the checkpoint again with all its "
                "shards (s3ckpt cp copies the commit last), or convert another one"
            )

    def tensors(self) -> list[TensorEntry]:
        return [TensorEntry(key, dtype, shape) for key, dtype, shape, _ in self.checkpoint.tensors()]

    def read_tensor(self, key: str) -> torch.Tensor:
        meta = self.checkpoint.tensor_metadata[key]
        shape, dtype = tuple(meta.size), meta.properties.dtype
        pieces = self._pieces.get(key, [])
        stored = sum(math.prod(item.shape or ()) for _, item in pieces)
        if stored != math.prod(shape):
            raise CorruptCheckpointError(
                f"{self.url}: the commit stores {stored} of the {math.prod(shape)} elements of {key}; the "
                "metadata is damaged or was written by a writer this reader does not know"
            )
        full = torch.empty(shape, dtype=dtype)
        flat = full.reshape(-1)
        row = math.prod(shape[1:])
        for offsets, item in pieces:
            piece_shape = item.shape or ()
            if item.raw_offset is not None and piece_shape[1:] == shape[1:]:
                # Whole rows (or the whole tensor): the chunk's elements are one run of the full buffer.
                start = offsets[0] * row if offsets else 0
                self.location.read_into(
                    item.name, item.raw_offset, byte_view(flat[start : start + math.prod(piece_shape)])
                )
                continue
            piece = self._read_piece(key, item)
            if not offsets:
                full.copy_(piece.reshape(shape))
            else:
                full[tuple(slice(o, o + s) for o, s in zip(offsets, piece_shape, strict=True))] = piece
        return full

    def read_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for key in self.checkpoint.tensor_metadata:
            _set_path(state, self._paths.get(key, (key,)), self.read_tensor(key))
        for key, item in self._bytes_items.items():
            _set_path(state, self._paths.get(key, (key,)), self._read_object(key, item))
        return state

    def _read_piece(self, key: str, item: StoredItem) -> torch.Tensor:
        dtype, shape = item.dtype, item.shape or ()
        if item.raw_offset is not None:
            piece = torch.empty(shape, dtype=dtype)
            self.location.read_into(item.name, item.raw_offset, byte_view(piece))
            return piece
        data = bytearray(item.length)
        self.location.read_into(item.name, item.offset, memoryview(data))
        piece = torch.load(io.BytesIO(data), weights_only=True)
        if not isinstance(piece, torch.Tensor) or tuple(piece.shape) != shape or piece.dtype != dtype:
            raise CorruptCheckpointError(
                f"{self.location.url(item.name)} at byte {item.offset}: the stored piece of {key} is not the "
                f"{dtype} tensor of shape {list(shape)} the commit describes"
            )
        return piece

    def _read_object(self, key: str, item: StoredItem) -> Any:
        data = bytearray(item.length)
        self.location.read_into(item.name, item.offset, memoryview(data))
        try:
            return torch.load(io.BytesIO(data), weights_only=not self.trust)
        except pickle.UnpicklingError as exc:
            raise WeightsOnlyLoadError(
                f"{self.url}: item {key!r} is a pickled Python object that weights_only loading refuses "
                f"({_refusal(exc)}). Unpickling it can run arbitrary code: if you trust this checkpoint, "
                "pass trust=True (s3ckpt convert --trust), as torch's dcp_to_torch_save does unconditionally"
            ) from exc


class FileSource:
    """One ``torch.save`` file (a Lightning checkpoint or any state dict), loaded whole on the CPU.

    Args:
        url: where it came from, for messages.
        data: the file's bytes.
        trust: unpickle it fully (else ``weights_only=True``).

    Raises:
        CorruptCheckpointError: if the bytes are not a readable torch checkpoint.
        WeightsOnlyLoadError: if ``weights_only`` refused an object in it.
    """

    kind = "torch.save file"

    def __init__(self, url: str, data: bytearray, trust: bool = False) -> None:
        self.url = url
        try:
            self.state = load_from_buffer(data, url, "cpu", weights_only=not trust)
        except WeightsOnlyLoadError as exc:
            raise WeightsOnlyLoadError(
                f"{exc}. If you trust this file, pass trust=True (s3ckpt convert --trust)"
            ) from exc
        self._tensors = dict(flatten(self.state, torch.Tensor))

    def tensors(self) -> list[TensorEntry]:
        return [
            TensorEntry(key, tensor.dtype, tuple(tensor.shape))
            for key, tensor in sorted(self._tensors.items())
        ]

    def read_tensor(self, key: str) -> torch.Tensor:
        return self._tensors[key].detach().contiguous()

    def read_state(self) -> dict[str, Any]:
        return dict(self.state) if isinstance(self.state, dict) else {"": self.state}


def open_source(url: str, store: S3Store, trust: bool = False) -> Source:
    """Open the checkpoint at ``url`` (``s3://`` or local): a sharded checkpoint's prefix or folder (it
    holds ``.metadata``), or one ``torch.save`` file. A sharded checkpoint's shards are checked to exist.

    Args:
        url: the source.
        store: the store for ``s3://`` URLs.
        trust: allow arbitrary pickled objects (a single file's non-tensor entries; a sharded
            checkpoint's byte items when the whole state is read).

    Raises:
        SourceNotFoundError: if nothing is there.
        CorruptCheckpointError: if what is there is not a checkpoint.
        IncompleteCheckpointError: if a shard the commit names is missing or short.
    """
    folder = location_of(url, store)
    commit_size = folder.size(COMMIT_NAME)
    if commit_size is not None:
        commit = bytearray(commit_size)
        folder.read_into(COMMIT_NAME, 0, memoryview(commit))
        source = ShardedSource(folder, commit, trust)
        source.check_shards()
        return source
    parent, name = parent_and_name(url)
    where = location_of(parent, store)
    size = where.size(name) if name else None
    if size is None:
        raise SourceNotFoundError(
            f"nothing to convert at {url}: no {COMMIT_NAME} under it (a sharded checkpoint) and no "
            "torch.save file by that name; check the path"
        )
    head = bytearray(min(size, 4))
    where.read_into(name, 0, memoryview(head))
    if bytes(head) not in _TORCH_SAVE_MAGIC and not (head and head[0] == _LEGACY_PICKLE):
        raise CorruptCheckpointError(
            f"{url} is not a checkpoint: neither a sharded checkpoint (no {COMMIT_NAME} under it) nor a "
            f"torch.save file ({size} bytes starting {bytes(head)!r}); point at a checkpoint's prefix or "
            ".ckpt file"
        )
    data = bytearray(size)
    where.read_into(name, 0, memoryview(data))
    return FileSource(where.url(name), data, trust)


def _refusal(exc: Exception) -> str:
    """The line of torch's long weights_only message that names what it refused."""
    lines = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line]
    return lines[0].split(". Please use")[0] if lines else str(exc)[:200]


def _set_path(root: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Put ``value`` at ``path`` in ``root``, making the dicts (str keys) and lists (int keys) on the way."""
    container: Any = root
    for here, after in itertools.pairwise(path):
        empty: Any = [] if isinstance(after, int) else {}
        if isinstance(container, list):
            assert isinstance(here, int)
            container.extend([None] * (here + 1 - len(container)))
            if container[here] is None:
                container[here] = empty
            container = container[here]
        else:
            container = container.setdefault(here, empty)
    last = path[-1]
    if isinstance(container, list):
        assert isinstance(last, int)
        container.extend([None] * (last + 1 - len(container)))
    container[last] = value
