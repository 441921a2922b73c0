"""Why ``S3AsyncStager`` is not torch's public ``DefaultStager``: what the public one does differently.

If one of these starts failing on a new torch, ``DefaultStager`` may now do what ``S3AsyncStager``
needs (see :mod:`s3_checkpoint_io.dcp.torch_internals`).
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

from s3_checkpoint_io.dcp import S3AsyncStager

_BLOCKING_CPU = StagingOptions(
    use_pinned_memory=False, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=False
)


def _state(value: float) -> dict[str, Any]:
    return {"weight": torch.full((256, 64), value), "step": int(value)}


def test_default_stager_overwrites_the_copy_a_save_in_flight_still_uploads() -> None:
    state = _state(1.0)
    public, ours = DefaultStager(_BLOCKING_CPU), S3AsyncStager(pin_memory=False)
    public_first, our_first = public.stage(state), ours.stage(state)
    state["weight"] += 100  # training goes on; the next save stages while the first still uploads
    public.stage(state)
    ours.stage(state)
    assert public_first["weight"][0, 0].item() == 101.0  # the first save's bytes changed under it
    assert our_first["weight"][0, 0].item() == 1.0
    public.close()
    ours.close()


def test_default_stager_does_not_reuse_buffers_for_new_tensors_of_the_same_shapes() -> None:
    public, ours = DefaultStager(_BLOCKING_CPU), S3AsyncStager(pin_memory=False)
    first, second = _state(1.0), _state(2.0)  # both alive: the public stager keeps first's buffer
    public_first, our_first = public.stage(first), ours.stage(first)
    public_address, our_address = public_first["weight"].data_ptr(), our_first["weight"].data_ptr()
    del public_first, our_first  # the first save is done with its copy
    gc.collect()
    assert public.stage(second)["weight"].data_ptr() != public_address
    assert ours.stage(second)["weight"].data_ptr() == our_address
    public.close()
    ours.close()
