"""Convert a sharded checkpoint to one ``torch.save`` file: the nested state dict, as torch's
``dcp_to_torch_save`` gives it, read from and written to S3 or local disk."""

from __future__ import annotations

import logging
import time

import torch

from s3_checkpoint_io.convert._store import store_for
from s3_checkpoint_io.convert.errors import DestinationExistsError, UnsupportedConversionError
from s3_checkpoint_io.convert.locations import location_of, parent_and_name
from s3_checkpoint_io.convert.result import ConversionResult
from s3_checkpoint_io.convert.sources import FileSource, open_source
from s3_utils import S3Store
from s3_utils.limits import MiB

log = logging.getLogger(__name__)


def to_torch_save(
    source: str,
    destination: str,
    *,
    overwrite: bool = False,
    trust: bool = False,
    store: S3Store | None = None,
) -> ConversionResult:
    """Load a sharded checkpoint whole and ``torch.save`` it as one file at ``destination``.

    Tensors come back whole (every shard's chunks assembled), nested as they were saved. The
    checkpoint's non-tensor items (DCP stores each as a pickle) are loaded with ``weights_only=True``
    unless ``trust``: a Lightning checkpoint's loops and callbacks state usually needs ``trust``.
    The whole state is held in memory, as ``torch.save`` needs it.

    Args:
        source: a sharded checkpoint's prefix or folder (``s3://`` or local).
        destination: the file or ``s3://`` object to write; it appears only once complete.
        overwrite: replace a file already there.
        trust: unpickle non-tensor items fully (runs code from the checkpoint: only for ones you trust).
        store: the store for ``s3://`` URLs (default: one from the ``AWS_*`` environment, closed after).

    Returns:
        What was written.

    Raises:
        SourceNotFoundError: if nothing is at ``source``.
        UnsupportedConversionError: if ``source`` is already one ``torch.save`` file.
        IncompleteCheckpointError: if a shard the commit references is missing or short.
        WeightsOnlyLoadError: if a non-tensor item needs ``trust``.
        DestinationExistsError: if ``destination`` exists and not ``overwrite``.
    """
    started = time.perf_counter()
    folder, name = parent_and_name(destination)
    if not name:
        raise ValueError(f"{destination}: name the file to write (e.g. {destination.rstrip('/')}/model.pt)")
    with store_for(store) as s3:
        opened = open_source(source, s3, trust)
        if isinstance(opened, FileSource):
            raise UnsupportedConversionError(
                f"{opened.url} is already one torch.save file; copy it with `s3ckpt cp` instead"
            )
        target = location_of(folder, s3)
        if not overwrite and target.size(name) is not None:
            raise DestinationExistsError(
                f"{target.url(name)} exists; pass overwrite=True (s3ckpt convert --overwrite) to replace it"
            )
        state = opened.read_state()
        with target.writer(name, None) as out:
            torch.save(state, out)
        size = target.size(name) or 0
    result = ConversionResult(
        opened.url,
        target.url(name),
        ((target.url(name), size),),
        len(opened.tensors()),
        time.perf_counter() - started,
    )
    log.info(
        "converted %s (%s) to torch.save %s: %d tensors, %.1f MiB in %.2f s",
        result.source,
        opened.kind,
        result.destination,
        result.tensors,
        result.bytes / MiB,
        result.seconds,
    )
    return result
