"""A CPU tensor's elements as a writable byte view, without copying them."""

from __future__ import annotations

import ctypes

import torch


def byte_view(tensor: torch.Tensor) -> memoryview:
    """The raw bytes of a C-contiguous CPU ``tensor``, sharing its memory (keep the tensor alive).

    Raises:
        ValueError: if the tensor is not a contiguous CPU tensor.
    """
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError(
            f"need a contiguous CPU tensor, got one on {tensor.device} (contiguous: {tensor.is_contiguous()})"
        )
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_ubyte * size).from_address(tensor.data_ptr())).cast("B")
