"""Node-local shared-memory files, by name, through which one rank hands replicated items to the
others of its node (see ``_replicated_reads``).

A file lies in ``/dev/shm`` (tmpfs: RAM) under a name the coordinator made unique to the load, so
every rank of the node can open it by that name; an anonymous ``memfd`` could not be opened by other
processes without passing its descriptor. Ranks share a node when they see the same ``/dev/shm``:
the same host name and the same device number of the mount, so that containers of one host with
their own ``/dev/shm`` are different nodes (each reads for itself) and never open a file that is not
there. Where there is no ``/dev/shm`` (not Linux), a rank reports no room and reads all it loads.

The writer reserves the file's whole size when it creates it (``posix_fallocate``): a full tmpfs
raises ``ENOSPC`` there, instead of killing the process with ``SIGBUS`` at a page it writes later.
Receivers map it copy-on-write (they never write it, and so share the writer's pages).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
from collections.abc import Iterable

from s3_checkpoint_io.dcp._records import NodeMemory

SHM_DIR = "/dev/shm"
NAME_PREFIX = "s3-checkpoint-dcp-"
"""Every file's name starts so in ``SHM_DIR`` (to tell them apart from others' files there)."""


def node_memory() -> NodeMemory:
    """This rank's node-local shared memory: which one it is and the room left in it."""
    try:
        stat = os.stat(SHM_DIR)
        space = os.statvfs(SHM_DIR)
    except OSError:
        return NodeMemory(f"{socket.gethostname()}:pid{os.getpid()}", 0)
    return NodeMemory(f"{socket.gethostname()}:{stat.st_dev}", space.f_bavail * space.f_frsize)


def path_of(name: str) -> str:
    """Where the file called ``name`` lies."""
    return os.path.join(SHM_DIR, NAME_PREFIX + name)


def create(name: str, size: int) -> mmap.mmap:
    """Create the file ``name`` of ``size`` bytes (reserved now) and map it writable.

    Raises:
        FileExistsError: if a file of that name exists (names are unique to a load: never reused).
        OSError: ``ENOSPC`` (saying how to give it room) if ``SHM_DIR`` cannot hold ``size`` bytes.
    """
    path = path_of(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise OSError(
                errno.ENOSPC,
                f"no room in {SHM_DIR} for the {size / 2**20:.1f} MiB of replicated items this rank reads "
                f"for the ranks of its node; give {SHM_DIR} more room (docker run --shm-size=...) or load "
                "with S3StorageReader(share_replicated=False)",
                path,
            ) from exc
        return mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def open_mapped(name: str, size: int) -> mmap.mmap:
    """Map the file ``name`` that another rank of this node created, copy-on-write.

    Raises:
        FileNotFoundError: if there is no such file (its writer sees another ``/dev/shm``).
        OSError: if the file is not ``size`` bytes (reading past its end would kill the process).
    """
    path = path_of(name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        found = os.fstat(fd).st_size
        if found != size:
            raise OSError(errno.EINVAL, f"the shared file holds {found} bytes, the load planned {size}", path)
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)


def remove(names: Iterable[str]) -> None:
    """Unlink the files ``names`` where they exist (their memory is freed once no rank maps them)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path_of(name))
