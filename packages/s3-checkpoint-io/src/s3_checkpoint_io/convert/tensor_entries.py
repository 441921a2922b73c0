"""The tensors a converter meets, by key: one entry per tensor, keys flattened as DCP flattens them."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

Leaf = TypeVar("Leaf")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the source.

    Attributes:
        key: its flattened key (nested keys joined with ``.``, as DCP flattens them).
        dtype: its element type.
        shape: the whole tensor's shape.
    """

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """The whole tensor's bytes."""
        return math.prod(self.shape) * self.dtype.itemsize


def flatten(value: Any, leaf_type: type[Leaf], prefix: str = "") -> Iterator[tuple[str, Leaf]]:
    """Every ``leaf_type`` value in a nested state (dicts, lists, tuples), keyed as DCP flattens keys:
    the parts joined by ``.``.

    Args:
        value: the state.
        leaf_type: what counts as a leaf (``torch.Tensor``, or a stand-in for one).
        prefix: the key of ``value`` itself.

    Yields:
        ``(flattened key, leaf)``.
    """
    if isinstance(value, leaf_type):
        yield prefix, value
        return
    if isinstance(value, Mapping):
        children: Iterator[tuple[Any, Any]] = iter(value.items())
    elif isinstance(value, list | tuple):
        children = enumerate(value)
    else:
        return
    for name, child in children:
        yield from flatten(child, leaf_type, f"{prefix}.{name}" if prefix else str(name))
