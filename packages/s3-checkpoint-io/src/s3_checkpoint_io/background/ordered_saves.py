"""The one engine for background saves: saves and the removals behind them, in order, bounded.

Both kinds of asynchronous save run through :class:`OrderedSaves`: the single-file saves of
``S3CheckpointIO`` (each a job its worker thread runs: :class:`SaveSlot.submit`) and the sharded saves
of the strategies (each already running in ``dcp.async_save``, handed in with :meth:`OrderedSaves.track`).

Jobs run one at a time in submission order, so a removal (or copy) queued after a save runs only once
that save is durable, and it holds the futures of the saves it must not outrun: it is skipped if one of
them failed. A failure of a job the engine ran is logged when it happens and kept until
:meth:`OrderedSaves.raise_failures` hands it to the caller; a tracked save's failure is its owner's to
report.

Two process events would otherwise lose work silently, so every live engine is hooked into both:

* interpreter exit: :func:`_finish_before_exit` waits for every pending save before
  ``concurrent.futures`` stops accepting work (see :mod:`~.before_exit`), logging any failure nobody
  was told about.
* ``os.fork``: the child has none of the parent's threads, only their bookkeeping and possibly a lock
  held mid-update; each engine starts empty in the child (see :mod:`~.fork`).
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from s3_checkpoint_io.background.before_exit import run_before_thread_shutdown
from s3_checkpoint_io.background.fork import start_fresh_after_fork
from s3_checkpoint_io.errors import BackgroundSaveError

log = logging.getLogger(__name__)


_WRITES = frozenset({"save", "copy"})
"""Jobs that write a checkpoint: what removals and copies wait for, and what ``pending_saves`` lists."""
_AFTER_SAVES = frozenset({"removal", "copy"})


@dataclass(frozen=True)
class _Job:
    path: str
    what: str  # "save", "removal" or "copy"
    future: Future[None]


@dataclass(frozen=True)
class _Failure:
    job: _Job
    error: BaseException
    owner_reports: bool  # a tracked save's: its owner raises it, then calls forget_tracked_failures


class OrderedSaves:
    """The ordered background saves of one owner (a plugin, a strategy); thread-safe for its callers.

    Args:
        max_pending_saves: saves that may be queued or running at once; :meth:`reserve_slot` blocks
            while that many are outstanding.
    """

    def __init__(self, max_pending_saves: int) -> None:
        self._max_pending_saves = max_pending_saves
        self._start_fresh()
        _live_savers.add(self)
        start_fresh_after_fork(self, OrderedSaves._start_fresh)

    def _start_fresh(self) -> None:
        # Also what a forked child runs: the parent's worker thread does not exist there and its locks
        # may have been held at the fork, so everything is replaced (the parent still owns its saves).
        self._slots = threading.BoundedSemaphore(self._max_pending_saves)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[int, _Job] = {}
        self._next_token = 0
        self._failures: list[_Failure] = []

    def reserve_slot(self) -> SaveSlot:
        """Wait until fewer than ``max_pending_saves`` saves are outstanding and take a place for one.

        Use it as a context manager: call :meth:`SaveSlot.submit` inside it; leaving the block
        without submitting (say, because taking the snapshot raised) frees the place again.
        """
        self._slots.acquire()
        return SaveSlot(self)

    def submit_after_saves(self, path: str, what: str, work: Callable[[], None]) -> Future[None]:
        """Queue ``work`` (a ``"removal"`` of ``path``, or a ``"copy"`` that writes ``path``) behind every
        save queued so far.

        It holds the jobs it must not outrun: saves and copies still pending, and those that failed
        without the caller having been told yet. It runs only if all of them succeeded: a removal may
        otherwise delete the only good checkpoint, a copy may read a source that never became durable.
        A pending copy counts as a pending save of ``path`` (:meth:`pending_saves`).
        """
        if what not in _AFTER_SAVES:
            raise ValueError(f"what={what!r}: use one of {sorted(_AFTER_SAVES)}")
        with self._lock:
            after = [job.future for job in self._pending.values() if job.what in _WRITES]
            after += [failure.job.future for failure in self._failures if failure.job.what in _WRITES]
            guarded = functools.partial(self._run_after, path, what, work, after)
            return self._queue(path, what, guarded, holds_slot=False)

    def track(self, path: str, running: Future[Any]) -> None:
        """Count ``running`` (the save of ``path``, already running elsewhere) as a pending save.

        Jobs queued later run after it and removals or copies behind it are skipped if it fails, as
        for a save this engine runs, until the owner calls :meth:`forget_tracked_failures`. It takes no
        slot (its owner bounds those), and its failure is neither logged nor raised by
        :meth:`raise_failures`: its owner reports it.
        """
        with self._lock:
            self._queue(
                path, "save", functools.partial(_outcome_of, running), holds_slot=False, owner_reports=True
            )

    def forget_tracked_failures(self) -> None:
        """The owner has reported its tracked saves' failures: jobs queued from now on do not wait on them."""
        with self._lock:
            self._failures = [failure for failure in self._failures if not failure.owner_reports]

    def _run_after(self, path: str, what: str, work: Callable[[], None], after: list[Future[None]]) -> None:
        # The worker runs jobs in order, so every future in ``after`` is done by now.
        if any(future.exception() is not None for future in after):
            log.warning("skipping the %s of %s: a checkpoint save queued before it failed", what, path)
            return
        work()

    def _queue(
        self, path: str, what: str, work: Callable[[], None], holds_slot: bool, owner_reports: bool = False
    ) -> Future[None]:
        # Called with self._lock held: _run pops the job under the same lock, so never before it is in.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-checkpoint-io")
        self._next_token += 1
        token = self._next_token
        future = self._executor.submit(self._run, token, work, holds_slot, owner_reports)
        self._pending[token] = _Job(path, what, future)
        return future

    def _run(self, token: int, work: Callable[[], None], holds_slot: bool, owner_reports: bool) -> None:
        # Bookkeeping happens inside the job, so that whoever waits on the future sees it done. A
        # failure is recorded before the job leaves _pending, so a removal queued meanwhile sees it.
        try:
            work()
        except BaseException as error:
            with self._lock:
                job = self._pending[token]
                self._failures.append(_Failure(job, error, owner_reports))
            if owner_reports:
                raise  # a tracked save: its owner logs and reports it
            log.error("background checkpoint %s of %s failed: %s", job.what, job.path, error, exc_info=error)
            raise  # into the job's future, which a removal queued behind it reads
        finally:
            with self._lock:
                self._pending.pop(token, None)
            if holds_slot:
                self._slots.release()

    def pending_saves(self) -> list[str]:
        """URLs whose save (or server-side copy) is still queued or running, oldest first."""
        with self._lock:
            return [job.path for job in self._pending.values() if job.what in _WRITES]

    def busy(self) -> bool:
        """Whether any save or removal is still queued or running."""
        with self._lock:
            return bool(self._pending)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every job queued so far has finished (or ``timeout`` seconds have passed).

        Raises:
            TimeoutError: if jobs are still running after ``timeout`` seconds.
        """
        with self._lock:
            futures = [job.future for job in self._pending.values()]
        _, not_done = wait(futures, timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} checkpoint save(s) still running after {timeout}s")

    def raise_failures(self) -> None:
        """Raise the oldest failure not yet reported (and forget them all), if there is one.

        Failures of tracked saves are their owner's to raise and stay (see :meth:`track`).

        Raises:
            BackgroundSaveError: naming the path; further failures are counted in the message.
        """
        with self._lock:
            failures = [failure for failure in self._failures if not failure.owner_reports]
            self._failures = [failure for failure in self._failures if failure.owner_reports]
        if not failures:
            return
        first = failures[0]
        more = f" ({len(failures) - 1} later background failure(s) also logged)" if len(failures) > 1 else ""
        raise BackgroundSaveError(
            f"asynchronous checkpoint {first.job.what} of {first.job.path} failed: "
            f"{type(first.error).__name__}: {first.error}{more}",
            first.job.path,
        ) from first.error

    def close(self) -> None:
        """Wait for every queued job, then stop the worker thread. A later submit starts a new one."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _finish_before_exit(self) -> None:
        pending = self.pending_saves()
        if pending:
            log.info("waiting for %d checkpoint save(s) before exit: %s", len(pending), ", ".join(pending))
        self.close()
        with self._lock:
            failures, self._failures = self._failures, []
        for failure in failures:
            if failure.owner_reports:
                continue
            log.error(
                "asynchronous checkpoint %s of %s failed before the interpreter exited (nothing was "
                "written there): %s: %s",
                failure.job.what,
                failure.job.path,
                type(failure.error).__name__,
                failure.error,
            )


class SaveSlot:
    """A place for one save, taken with :meth:`OrderedSaves.reserve_slot`; freed when the save ends."""

    def __init__(self, saver: OrderedSaves) -> None:
        self._saver: OrderedSaves | None = saver

    def submit(self, path: str, upload: Callable[[], None]) -> Future[None]:
        """Queue ``upload`` (the save of ``path``) on the worker; the slot is freed when it finishes.

        Returns:
            A future that completes when the save is durable, or holds its error.
        """
        saver, self._saver = self._saver, None
        if saver is None:
            raise RuntimeError("this save slot was already used")
        try:
            with saver._lock:
                return saver._queue(path, "save", upload, holds_slot=True)
        except BaseException:
            saver._slots.release()
            raise

    def __enter__(self) -> SaveSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        saver, self._saver = self._saver, None
        if saver is not None:  # never submitted
            saver._slots.release()


_live_savers: weakref.WeakSet[OrderedSaves] = weakref.WeakSet()


def _finish_before_exit() -> None:
    for saver in list(_live_savers):
        saver._finish_before_exit()


def _outcome_of(running: Future[Any]) -> None:
    """Wait for a save running elsewhere; raise what it raised (DCP's error is a BaseException)."""
    error = running.exception()
    if error is not None:
        raise error


run_before_thread_shutdown(_finish_before_exit)
