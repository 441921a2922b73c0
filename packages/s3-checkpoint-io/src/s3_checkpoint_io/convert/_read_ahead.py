"""Whole tensors read a few at a time ahead of the writer, with the bytes in memory bounded."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


def read_ahead(
    items: Sequence[T],
    read: Callable[[T], torch.Tensor],
    size_of: Callable[[T], int],
    workers: int,
    max_bytes: int,
) -> Generator[tuple[T, torch.Tensor], None, None]:
    """``(item, read(item))`` for every item, in order, reading up to ``workers`` items at once.

    A read starts only while the items read but not yet consumed hold at most ``max_bytes`` (one item
    always may, however large), so memory stays under ``max_bytes`` plus the largest item, whatever
    the total. The pool is shut down when the iterator ends, fails or is closed; reads not started are
    cancelled.

    Args:
        items: what to read, in the order to yield.
        read: reads one item (called on a worker thread).
        size_of: the bytes ``read`` will hold for an item.
        workers: reads in flight at most (>= 1).
        max_bytes: bytes read ahead of the consumer at most.

    Raises:
        Exception: what ``read`` raised, when its item's turn comes.
    """
    pending: deque[tuple[T, int, Future[torch.Tensor]]] = deque()
    held = 0
    following = iter(items)
    upcoming: T | None = None
    exhausted = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3ckpt-convert-read") as pool:
        try:
            while True:
                while not exhausted and len(pending) < workers:
                    if upcoming is None:
                        upcoming = next(following, None)
                        if upcoming is None:
                            exhausted = True
                            break
                    size = size_of(upcoming)
                    if pending and held + size > max_bytes:
                        break
                    pending.append((upcoming, size, pool.submit(read, upcoming)))
                    held += size
                    upcoming = None
                if not pending:
                    return
                item, size, future = pending.popleft()
                tensor = future.result()
                held -= size
                yield item, tensor
                del tensor
        finally:
            for _, _, future in pending:
                future.cancel()
