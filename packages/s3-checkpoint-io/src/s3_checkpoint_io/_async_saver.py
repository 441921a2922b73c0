"""One background worker that runs saves and removals in order, with bounded pending saves.

Jobs run one at a time in submission order, so a removal queued after a save runs only once that
save is durable. A failure is logged when it happens and kept until :meth:`AsyncSaver.raise_failures`
hands it to the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from s3_checkpoint_io.errors import BackgroundSaveError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Failure:
    path: str
    what: str
    error: BaseException


class AsyncSaver:
    """Owns the worker thread of one ``S3CheckpointIO``; thread-safe for its callers.

    Args:
        max_pending_saves: saves that may be queued or running at once; :meth:`submit_save` blocks
            while that many are outstanding.
    """

    def __init__(self, max_pending_saves: int) -> None:
        self._slots = threading.BoundedSemaphore(max_pending_saves)
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[int, tuple[str, str, Future[None]]] = {}
        self._next_token = 0
        self._failures: list[_Failure] = []
        self._failure_count = 0

    def submit_save(self, path: str, prepare: Callable[[], Callable[[], None]]) -> Future[None]:
        """Wait for a free slot (backpressure), call ``prepare`` and queue the job it returns.

        ``prepare`` runs in the caller's thread once a slot is free (e.g. to take a snapshot); if it
        raises, nothing is queued and the slot is freed.

        Returns:
            A future that completes when the save is durable (or has failed).
        """
        self._slots.acquire()
        try:
            return self._submit(path, "save", prepare(), release_slot=True)
        except BaseException:
            self._slots.release()
            raise

    def submit_removal(self, path: str, job: Callable[[], None]) -> Future[None]:
        """Queue a removal of ``path`` behind every save queued so far.

        The removal is skipped (and logged) if any of those saves fails: the checkpoint it would
        replace may then be the only good one.
        """
        with self._lock:
            failures_before = self._failure_count

        def guarded() -> None:
            with self._lock:
                failed_since = self._failure_count - failures_before
            if failed_since:
                log.warning("not removing %s: an earlier checkpoint save failed", path)
                return
            job()

        return self._submit(path, "removal", guarded, release_slot=False)

    def _submit(self, path: str, what: str, job: Callable[[], None], release_slot: bool) -> Future[None]:
        def run() -> None:
            # Bookkeeping happens inside the job, so that whoever waits on the future sees it done.
            try:
                job()
            except BaseException as error:
                log.error("background checkpoint %s of %s failed: %s", what, path, error, exc_info=error)
                with self._lock:
                    self._failures.append(_Failure(path, what, error))
                    self._failure_count += 1
            finally:
                with self._lock:
                    self._pending.pop(token, None)
                if release_slot:
                    self._slots.release()

        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-checkpoint-io")
            self._next_token += 1
            token = self._next_token
            future = self._executor.submit(run)
            self._pending[token] = (path, what, future)
        return future

    def pending_saves(self) -> list[str]:
        """URLs whose save is still queued or running, oldest first."""
        with self._lock:
            return [path for path, what, _ in self._pending.values() if what == "save"]

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
            futures = [future for _, _, future in self._pending.values()]
        _, not_done = wait(futures, timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} checkpoint save(s) still running after {timeout}s")

    def raise_failures(self) -> None:
        """Raise the oldest failure not yet reported (and forget them all), if there is one.

        Raises:
            BackgroundSaveError: naming the path; further failures are counted in the message.
        """
        with self._lock:
            failures, self._failures = self._failures, []
        if not failures:
            return
        first = failures[0]
        more = f" ({len(failures) - 1} later background failure(s) also logged)" if len(failures) > 1 else ""
        raise BackgroundSaveError(
            f"asynchronous checkpoint {first.what} of {first.path} failed: "
            f"{type(first.error).__name__}: {first.error}{more}",
            first.path,
        ) from first.error

    def close(self) -> None:
        """Wait for every queued job, then stop the worker thread. A later submit starts a new one."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
