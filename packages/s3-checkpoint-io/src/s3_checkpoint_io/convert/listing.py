"""The tensors of one ``torch.save`` file, read from its zip directory and pickle alone (no tensor bytes).

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (the pickled structure) and one record per
storage. Python's ``zipfile`` reads the end of the archive and its central directory through ranged
reads of the object, then the ``data.pkl`` record; an unpickler that builds nothing but inert records
(each storage's dtype, each tensor's shape; any other class becomes an empty stand-in) tells every
tensor's key, dtype and shape. Safe on files from anywhere, and a few small GETs whatever the size.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from s3_checkpoint_io.convert.tensor_entries import TensorEntry, flatten
from s3_checkpoint_io.errors import CorruptCheckpointError
from s3_utils import S3Store

_READ_BUFFER = 256 * 1024
"""Bytes per ranged GET while zipfile walks the archive's directory."""


def list_file_tensors(store: S3Store, url: str) -> list[TensorEntry]:
    """Every tensor in the ``torch.save`` object at ``url``, from its zip directory and ``data.pkl`` only.

    Args:
        store: the store to read with.
        url: the ``s3://`` object.

    Returns:
        The tensors, sorted by key.

    Raises:
        S3NotFoundError: if there is no such object.
        CorruptCheckpointError: if it is not a zip-format ``torch.save`` file.
    """
    size = store.head(url).size
    try:
        with zipfile.ZipFile(io.BufferedReader(_RangedObject(store, url, size), _READ_BUFFER)) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if not names:
                raise CorruptCheckpointError(
                    f"{url} is a zip archive without data.pkl: not a torch.save file"
                )
            structure = archive.read(names[0])
    except zipfile.BadZipFile as exc:
        raise CorruptCheckpointError(
            f"{url} is not a zip-format torch.save file ({exc}); only torch.save's default format can be "
            "listed without loading it"
        ) from exc
    try:
        state = _ListingUnpickler(io.BytesIO(structure)).load()
    except Exception as exc:
        raise CorruptCheckpointError(f"{url}: its data.pkl does not unpickle: {exc}") from exc
    return sorted(
        (TensorEntry(key, entry.dtype, entry.shape) for key, entry in flatten(state, TensorEntry)),
        key=lambda t: t.key,
    )


class _RangedObject(io.RawIOBase):
    """A read-only, seekable file over one S3 object: every read is one ranged GET."""

    def __init__(self, store: S3Store, url: str, size: int) -> None:
        self._store, self._url, self._size, self._position = store, url, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(view.nbytes, self._size - self._position))
        if count:
            self._store.download_range(self._url, self._position, view[:count])
            self._position += count
        return count


@dataclass(frozen=True)
class _Storage:
    dtype: torch.dtype


class _Stand_in(dict[Any, Any]):
    """Whatever the pickle names that is not a tensor: accepts any construction and state, keeps items."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, *rest: Any) -> TensorEntry:
    return TensorEntry("", storage.dtype, tuple(int(s) for s in size))


def _first(data: Any, *rest: Any) -> Any:
    return data


def _from_type(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    return func(*args)


_REBUILDERS = {
    "_rebuild_tensor_v2": _rebuild_tensor,
    "_rebuild_parameter": _first,
    "_rebuild_parameter_with_state": _first,
    "_rebuild_from_type_v2": _from_type,
}


class _ListingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in _REBUILDERS:
            return _REBUILDERS[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (_Stand_in,), {})

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, *_ = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent record {kind!r}")
        with (
            warnings.catch_warnings()
        ):  # a legacy storage class's dtype warns that TypedStorage is deprecated
            warnings.simplefilter("ignore", UserWarning)
            dtype = (
                torch.uint8 if storage_type is torch.UntypedStorage else getattr(storage_type, "dtype", None)
            )
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"a storage of unknown type {storage_type!r}")
        return _Storage(dtype)
