"""The safetensors format, written directly (the ``safetensors`` library cannot stream to S3).

A file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` padded with spaces to a multiple of 8,
then every tensor's raw little-endian bytes back to back in header order. Every size is known from
the names, shapes and dtypes alone, so the header is written before any tensor is read. A model too
big for one file is split as Hugging Face does: ``model-0000k-of-0000n.safetensors`` files and
``model.safetensors.index.json`` mapping each tensor to its file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from s3_checkpoint_io.convert.errors import SelectionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_FILE_BYTES = 5 * 10**9
"""Hugging Face's default ``max_shard_size`` ("5GB")."""
_ALIGNMENT = 8

DTYPES: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.uint16: "U16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
    torch.uint32: "U32",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
"""Every torch dtype safetensors has a name for."""


@dataclass(frozen=True)
class OutputTensor:
    """One tensor as it will be written.

    Attributes:
        name: its name in the safetensors file.
        key: its key in the source.
        dtype: the dtype written (after any cast).
        shape: its shape.
    """

    name: str
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of its data in the file."""
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class FilePlan:
    """One safetensors file: its name, header and tensors in the order their bytes follow it.

    Attributes:
        name: the file name (``model.safetensors`` or ``model-0000k-of-0000n.safetensors``).
        header: the length prefix and padded JSON header, ready to write.
        tensors: the tensors, in data order.
    """

    name: str
    header: bytes
    tensors: tuple[OutputTensor, ...]

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data after the header."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def size(self) -> int:
        """The whole file's bytes."""
        return len(self.header) + self.data_bytes


def safetensors_dtype(dtype: torch.dtype, what: str) -> str:
    """The safetensors name of ``dtype``.

    Raises:
        SelectionError: naming ``what`` and the dtype, if safetensors has no such type.
    """
    try:
        return DTYPES[dtype]
    except KeyError:
        raise SelectionError(
            f"{what} is {dtype}, which safetensors cannot store (it stores "
            f"{', '.join(sorted(set(DTYPES.values())))}); cast it with dtype=... (--dtype) if it is a "
            "float, or leave it out with the key filter"
        ) from None


def header_bytes(tensors: Sequence[OutputTensor], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length and the JSON header of a file holding ``tensors`` in this order."""
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = metadata
    begin = 0
    for tensor in tensors:
        end = begin + tensor.nbytes
        entries[tensor.name] = {
            "dtype": safetensors_dtype(tensor.dtype, tensor.name),
            "shape": list(tensor.shape),
            "data_offsets": [begin, end],
        }
        begin = end
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % _ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def plan_files(
    tensors: Sequence[OutputTensor], max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[FilePlan]:
    """Split ``tensors`` (in order) into files of at most ``max_file_bytes`` of data each, as Hugging
    Face does: a tensor larger than the limit gets a file of its own.

    Returns:
        One :class:`FilePlan` named ``model.safetensors`` if everything fits in one, else the numbered
        files.
    """
    groups: list[list[OutputTensor]] = [[]]
    filled = 0
    for tensor in tensors:
        if groups[-1] and filled + tensor.nbytes > max_file_bytes:
            groups.append([])
            filled = 0
        groups[-1].append(tensor)
        filled += tensor.nbytes
    count = len(groups)
    metadata = {"format": "pt"}  # what transformers checks for in a PyTorch safetensors file
    return [
        FilePlan(
            SINGLE_FILE if count == 1 else f"model-{number:05d}-of-{count:05d}.safetensors",
            header_bytes(group, metadata),
            tuple(group),
        )
        for number, group in enumerate(groups, start=1)
    ]


def index_bytes(files: Sequence[FilePlan]) -> bytes:
    """``model.safetensors.index.json`` for ``files``: the total data size and each tensor's file."""
    index = {
        "metadata": {"total_size": sum(f.data_bytes for f in files)},
        "weight_map": {t.name: f.name for f in files for t in f.tensors},
    }
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
