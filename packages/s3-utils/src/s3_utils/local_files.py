"""Local files that appear whole or not at all: written beside their target, then renamed over it.

The one rule every local write here follows (downloads, ``s3ckpt`` copies of sharded checkpoints,
conversions). A Ctrl-C can land at any bytecode, including the instant after the temporary file was
created and before its name reached the caller; the temporary's name is therefore chosen *before* it is
created, so whatever interrupts, the name to remove is known.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

__all__ = ["file_replacing"]

_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


@contextlib.contextmanager
def file_replacing(target: str | os.PathLike[str], suffix: str = ".part") -> Iterator[int]:
    """Yield the descriptor of a new, empty file that replaces ``target`` when the block succeeds.

    The file is ``.<name>.<random><suffix>`` in ``target``'s folder (same file system, so the final
    rename is atomic). On success it is flushed to disk (``fsync``), closed and renamed over
    ``target``; on any exception, ``KeyboardInterrupt`` included, it is closed and deleted and the
    exception goes on. The caller must not close the descriptor.

    Args:
        target: the file to create or replace; its folder must exist.
        suffix: the temporary file's name ending.

    Yields:
        The temporary file's descriptor, open for reading and writing.
    """
    path = os.fspath(target)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = _fresh_name(folder, name, suffix)
    fd = -1
    try:
        while fd < 0:
            try:
                fd = os.open(temporary, _CREATE, 0o644)
            except FileExistsError:
                temporary = _fresh_name(folder, name, suffix)  # another writer's: never ours to remove
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        _remove(temporary)  # missing when interrupted before it was made, or after the rename
        raise


def _fresh_name(folder: str, name: str, suffix: str) -> str:
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}{suffix}")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
