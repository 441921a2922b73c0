"""The request-rate state of every prefix, in one table shared by a process and the processes it starts.

A table is a fixed number of slots in a memory-mapped file under ``/dev/shm``, locked across processes
(``fcntl.lockf``) and threads (a :class:`threading.Lock`). Its path travels to child processes in the
environment variable :data:`TABLE_ENV_VAR`, set when the table is opened: a child started later (the
upload helper process of a rank, any subprocess) finds it there and joins the same table, with no
argument passed. A forked child shares the mapping as it is. The local ranks of a ``torch.distributed``
job started by a launcher that never opened a table (``torchrun``) find one another's by name: one
table per job (``MASTER_ADDR``, ``MASTER_PORT``, ``TORCHELASTIC_RUN_ID``) and user on each machine, so
the ranks writing to one prefix share one rate for it. The process that created a file removes it at
exit (processes still using it keep their mapping); a file left by a killed owner is removed by the
next table opened on the machine.

Where shared memory cannot be had, the table lives in this process alone (logged at DEBUG).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import glob
import hashlib
import logging
import mmap
import os
import re
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

logger = logging.getLogger(__name__)

TABLE_ENV_VAR = "S3_UTILS_REQUEST_RATE_TABLE"
"""The path of this process's shared request-rate table, inherited by the processes it starts."""

SLOTS = 1024
"""Prefixes (per request class) one table tracks at once; idle ones make room for new ones."""
_PROBES = 16
_MAGIC = b"S3RATES4"
_HEADER = struct.Struct("<8sIIQ")
_HEADER_SIZE = 64
_SLOT = struct.Struct("<Qq12d")
_SHM_FOLDER = "/dev/shm"
_FILE_PREFIX = "s3_utils-request-rates-"
_FILE_NAME = re.compile(re.escape(_FILE_PREFIX) + r"(\d+)-[0-9a-f]+$")


@dataclass(slots=True)
class Slot:
    """One prefix's limiter state (all times on :func:`time.monotonic`'s clock, shared by processes).

    Attributes:
        key: :func:`slot_key` of the prefix and class; 0 for a free slot.
        epoch: how many times the rate was decreased; a SlowDown to a request sent in an earlier epoch
            was already answered by a decrease.
        rate: allowed requests per second; 0 while the prefix is not limited.
        tokens: requests that may start now (negative: reserved by requests waiting their turn).
        refilled_at: when ``tokens`` was last brought up to date.
        window_start: start of the current window of counted successes.
        window_count: successes in the current window.
        last_count: successes in the window before.
        last_s: the length of the window before.
        decreased_at: when the rate was last decreased.
        used_at: the last request or answer on this prefix.
        step: requests per second added per second of successes (set at each decrease).
        ceiling: requests per second this machine's processes may send, from the first request on
            (their fair share of a prefix shared with other machines' ranks); 0 when none is known.
        holders: the writers on this machine that declared ``ceiling`` and have not released it.
    """

    key: int = 0
    epoch: int = 0
    rate: float = 0.0
    tokens: float = 0.0
    refilled_at: float = 0.0
    window_start: float = 0.0
    window_count: float = 0.0
    last_count: float = 0.0
    last_s: float = 0.0
    decreased_at: float = 0.0
    used_at: float = 0.0
    step: float = 0.0
    ceiling: float = 0.0
    holders: float = 0.0

    def values(
        self,
    ) -> tuple[int, int, float, float, float, float, float, float, float, float, float, float, float, float]:
        """The fields in their stored order (``dataclasses.astuple`` costs tens of microseconds)."""
        return (
            self.key,
            self.epoch,
            self.rate,
            self.tokens,
            self.refilled_at,
            self.window_start,
            self.window_count,
            self.last_count,
            self.last_s,
            self.decreased_at,
            self.used_at,
            self.step,
            self.ceiling,
            self.holders,
        )


@lru_cache(maxsize=4096)
def slot_key(prefix: str, request_class: str) -> int:
    """A stable 64-bit key (never 0) for a prefix and request class, the same in every process."""
    digest = hashlib.blake2b(f"{request_class}\0{prefix}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class RateTable:
    """Fixed slots of :class:`Slot` in a buffer: shared memory (see the module) or this process's own.

    Use :func:`open_shared_table` or :meth:`local`; read and write slots inside :meth:`locked`.
    """

    def __init__(
        self,
        buffer: mmap.mmap | bytearray,
        fd: int | None,
        path: str | None,
        owner: bool,
        owner_pid: int | None = None,
    ) -> None:
        self._buffer = buffer
        self._fd = fd
        self.path = path
        """The shared file, or None for a process-local table."""
        self.owner = owner_pid or os.getpid()
        """The process that created the table (and removes it at exit)."""
        self._removes_at_exit = owner
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._after_fork)

    @classmethod
    def local(cls) -> RateTable:
        """A table of this process alone."""
        buffer = bytearray(_HEADER_SIZE + SLOTS * _SLOT.size)
        _HEADER.pack_into(buffer, 0, _MAGIC, SLOTS, _SLOT.size, os.getpid())
        return cls(buffer, None, None, owner=False)

    @property
    def shared(self) -> bool:
        """Whether other processes can see this table."""
        return self.path is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the table against every other thread and process using it."""
        with self._lock:
            if self._fd is None:
                yield
                return
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def find(self, key: int) -> int | None:
        """The index of ``key``'s slot, or None if it has none (hold :meth:`locked`)."""
        home = key % SLOTS
        for probe in range(_PROBES):
            index = (home + probe) % SLOTS
            stored = struct.unpack_from("<Q", self._buffer, self._offset(index))[0]
            if stored == key:
                return index
            if stored == 0:
                return None
        return None

    def claim(self, key: int, now: float, idle_before: float) -> int:
        """The index of ``key``'s slot, given a fresh one (its window starting ``now``) if it has none
        (hold :meth:`locked`).

        A free slot is taken first, then one whose prefix was last used before ``idle_before``, then the
        least recently used among the probed ones.
        """
        home = key % SLOTS
        candidates = [(home + probe) % SLOTS for probe in range(_PROBES)]
        found = self.find(key)
        if found is not None:
            return found
        slots = [(self.read(index), index) for index in candidates]
        free = [index for slot, index in slots if slot.key == 0 or slot.used_at < idle_before]
        index = free[0] if free else min(slots, key=lambda pair: pair[0].used_at)[1]
        self.write(index, Slot(key=key, window_start=now, used_at=now))
        return index

    def read(self, index: int) -> Slot:
        """Slot ``index`` (hold :meth:`locked`)."""
        return Slot(*_SLOT.unpack_from(self._buffer, self._offset(index)))

    def write(self, index: int, slot: Slot) -> None:
        """Store ``slot`` at ``index`` (hold :meth:`locked`)."""
        _SLOT.pack_into(self._buffer, self._offset(index), *slot.values())

    def close(self) -> None:
        """Unmap the table; the owner also removes its file."""
        if self.path is not None and self._removes_at_exit and self.owner == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if isinstance(self._buffer, mmap.mmap):
            with contextlib.suppress(BufferError, ValueError):
                self._buffer.close()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    @staticmethod
    def _offset(index: int) -> int:
        return _HEADER_SIZE + index * _SLOT.size

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it at the fork


def open_shared_table() -> RateTable:
    """This process's table: the one named by :data:`TABLE_ENV_VAR` if it can be joined; else, in a
    ``torch.distributed`` job (``MASTER_ADDR``/``MASTER_PORT`` set), the job's table on this machine,
    joined or created; else a new shared one; else (no shared memory) one of this process alone. The
    path of a shared table is then set in :data:`TABLE_ENV_VAR` for the processes this one starts."""
    table = _join_or_create()
    if table.path is not None:
        os.environ[TABLE_ENV_VAR] = table.path
    return table


def _join_or_create() -> RateTable:
    path = os.environ.get(TABLE_ENV_VAR)
    if path:
        try:
            return _attach(path)
        except (OSError, ValueError) as exc:
            logger.debug("cannot join the request-rate table %s (%s); starting a new one", path, exc)
    try:
        if not os.path.isdir(_SHM_FOLDER):
            raise OSError(f"no {_SHM_FOLDER}")
        _remove_orphans()
        return _job_table() or _create(None)
    except (OSError, ValueError) as exc:
        logger.debug("no shared memory for the request-rate table (%s); this process keeps its own", exc)
        return RateTable.local()


def _job_table() -> RateTable | None:
    """The table every process of this machine in the same ``torch.distributed`` job shares (the local
    ranks, started by a launcher that never opened one), or None outside such a job."""
    master = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if master[1] is None:
        return None
    job = "\0".join((*map(str, master), os.environ.get("TORCHELASTIC_RUN_ID", ""), str(os.getuid())))
    name = f"{_FILE_PREFIX}job-{hashlib.blake2b(job.encode(), digest_size=8).hexdigest()}"
    path = os.path.join(_SHM_FOLDER, name)
    for _ in range(2):
        try:
            table = _attach(path)
        except FileNotFoundError:
            pass
        else:
            if _running(table.owner):
                return table
            table.close()  # left by a job whose first process was killed: start it again
            with contextlib.suppress(OSError):
                os.unlink(path)
        try:
            return _create(path)
        except FileExistsError:
            continue  # another rank created it first: join that one
    return None


def _attach(path: str) -> RateTable:
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size != _HEADER_SIZE + SLOTS * _SLOT.size:
            raise ValueError(f"size {size}, not a table of {SLOTS} slots")
        buffer = mmap.mmap(fd, size)
        magic, slots, slot_size, owner = _HEADER.unpack_from(buffer, 0)
        if (magic, slots, slot_size) != (_MAGIC, SLOTS, _SLOT.size):
            buffer.close()
            raise ValueError("not a request-rate table of this version")
    except BaseException:
        os.close(fd)
        raise
    return RateTable(buffer, fd, path, owner=False, owner_pid=owner)


def _create(path: str | None) -> RateTable:
    """A new table at ``path`` (a fresh name if None), complete before any other process can open it;
    owned by this process (removed at its exit). Raises FileExistsError if ``path`` exists."""
    draft = os.path.join(_SHM_FOLDER, f"{_FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
    size = _HEADER_SIZE + SLOTS * _SLOT.size
    fd = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        buffer = mmap.mmap(fd, size)
        _HEADER.pack_into(buffer, 0, _MAGIC, SLOTS, _SLOT.size, os.getpid())
        if path is not None:
            os.link(draft, path)  # atomic: the name appears with the header written, or not at all
            os.unlink(draft)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(draft)
        raise
    table = RateTable(buffer, fd, path or draft, owner=True, owner_pid=os.getpid())
    atexit.register(table.close)
    return table


def _remove_orphans() -> None:
    """Remove the tables of owners that no longer run (killed before their exit handler)."""
    for path in glob.glob(os.path.join(_SHM_FOLDER, _FILE_PREFIX + "*")):
        match = _FILE_NAME.search(path)
        if match is None or _running(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
