"""Write one checkpoint to S3: ``torch.save`` streamed into a multipart upload.

:func:`write_checkpoint` is how every single-file save reaches S3, wherever it runs: in the caller's
thread (a synchronous save), on the background saver's thread (the ``"thread"`` uploader) or in the
upload helper process (the ``"process"`` uploader, :mod:`s3_checkpoint_io.background.upload_helper`).

Imports only the standard library, torch and s3_utils: the upload helper process imports it too.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import IO, Any, cast

import torch

from s3_utils import S3Store, TransferStats


def write_checkpoint(store: S3Store, checkpoint: Any, url: str) -> TransferStats:
    """``torch.save`` ``checkpoint`` into a streaming multipart upload to ``url``.

    Args:
        store: the store to upload through.
        checkpoint: the state to save.
        url: an ``s3://bucket/key`` URL.

    Returns:
        The writer's statistics: bytes, seconds from opening the upload to completing it, requests
        sent (retries included) and retries.

    Raises:
        Exception: whatever ``torch.save`` or the upload raised; the upload is aborted then and no
            object appears at ``url``.
    """
    expected = storage_bytes(checkpoint)
    with without_zip_crc32(), store.open_writer(url, expected_size=expected) as writer:
        torch.save(checkpoint, cast(IO[bytes], writer))
    assert writer.stats is not None  # set when the writer closed without an error
    return writer.stats


def storage_bytes(obj: Any) -> int:
    """The bytes of the distinct tensor storages in ``obj`` (through dicts, lists and tuples): about
    what ``torch.save`` will write, which lets the upload split it into equal parallel parts."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.layout is torch.strided and not item.is_meta:
                storage = item.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


_crc32_lock = threading.Lock()
_crc32_users = 0
_crc32_before = True


@contextlib.contextmanager
def without_zip_crc32() -> Iterator[None]:
    """Let ``torch.save`` skip the zip CRC32 of every record while our saves run (where torch can).

    The upload carries a CRC64NVME of the whole object that S3 checks, and downloads check it again,
    so the zip's own checksum is redundant work (about a seventh of a save's CPU). torch's setting is
    process-wide: it is switched off while at least one of our saves runs and restored after the last.
    """
    global _crc32_users, _crc32_before
    config = _torch_save_config()
    if config is None:
        yield
        return
    with _crc32_lock:
        if _crc32_users == 0:
            _crc32_before = config.compute_crc32
            config.compute_crc32 = False
        _crc32_users += 1
    try:
        yield
    finally:
        with _crc32_lock:
            _crc32_users -= 1
            if _crc32_users == 0:
                config.compute_crc32 = _crc32_before


def _torch_save_config() -> Any:
    try:
        from torch.utils.serialization import config
    except ImportError:  # torch older than 2.6
        return None
    return config.save if hasattr(config.save, "compute_crc32") else None
