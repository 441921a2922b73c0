"""Run a batch of tasks on the store's worker threads, all or nothing: the first failure cancels the rest.

Ranged downloads (:mod:`~s3_utils.download`) and multipart copies (:mod:`~s3_utils.copies`) both send
their requests this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from typing import TypeVar

T = TypeVar("T")


def run_all(executor: Executor, tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``tasks`` on ``executor``; on the first failure cancel the rest and raise it.

    Returns:
        Each task's result, in the order of ``tasks``.

    Raises:
        Exception: the first failure, once every task that had started has finished.
    """
    futures: list[Future[T]] = [executor.submit(task) for task in tasks]
    wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
    if failed is not None:
        for future in futures:
            future.cancel()
        wait([f for f in futures if not f.cancelled()])  # a cancelled one may never count as done
        error = failed.exception()
        assert error is not None
        raise error
    return [future.result() for future in futures]
