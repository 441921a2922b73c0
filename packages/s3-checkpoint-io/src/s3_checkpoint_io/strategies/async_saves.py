"""Asynchronous sharded saves of the Lightning strategies: ``dcp.async_save`` with backpressure.

Every rank keeps the futures of its own saves in flight. DCP hands a save's failure to every rank
(the coordinator scatters it), and every rank waits at the same points (the next save beyond
``max_pending``, a load, teardown), so all ranks raise the same :class:`BackgroundSaveError` at the same
call and none is left waiting in a collective. Removals (rank 0 only) wait for every save submitted
before them and are dropped if one of those failed: an older checkpoint is never deleted before the
newer one is committed.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save

from s3_checkpoint_io.dcp import S3AsyncStager, S3StorageWriter
from s3_checkpoint_io.errors import BackgroundSaveError

log = logging.getLogger(__name__)


class ShardedAsyncSaves:
    """The sharded saves of one strategy that run in the background, and the removals behind them.

    Args:
        max_pending: saves in flight at once (``S3CheckpointIO``'s validated ``max_pending_saves``);
            one more waits for the oldest (backpressure).
    """

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending: collections.deque[tuple[str, Future[Any], int]] = collections.deque()
        self._removals: collections.deque[tuple[str, Callable[[], None], int]] = collections.deque()
        self._submitted = 0
        self._stager = S3AsyncStager(max_buffer_sets=max_pending + 1)
        self._group: Any = None

    def save(self, state: dict[str, Any], url: str, writer: S3StorageWriter) -> None:
        """Stage ``state`` (blocks until copied) and upload it in the background (all ranks).

        Raises:
            BackgroundSaveError: if an earlier save failed (then this one is not started).
        """
        self.wait(keep=self.max_pending - 1)
        future = dcp_async_save(
            state, storage_writer=writer, async_stager=self._stager, process_group=self._process_group()
        )
        # A stager that returns the staged state (ours does) makes async_save return the upload future.
        assert isinstance(future, Future)
        self._submitted += 1
        self._pending.append((url, future, self._submitted))

    def remove_after_pending(self, url: str, remove: Callable[[], None]) -> None:
        """Run ``remove`` once every save submitted so far has committed (now, if none is pending)."""
        self._removals.append((url, remove, self._submitted))
        self._run_due_removals(completed=self._completed())

    def wait(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` saves are in flight, running the removals that became due.

        Raises:
            BackgroundSaveError: naming the first failed save; the removals behind it are dropped.
        """
        while len(self._pending) > keep:
            url, future, number = self._pending.popleft()
            try:
                future.result()
            except (Exception, CheckpointException) as error:  # DCP's is a BaseException
                self._fail(url, error)
            self._run_due_removals(completed=number)
        if not self._pending:
            self._run_due_removals(completed=self._submitted)

    def close(self) -> None:
        """Wait for everything outstanding, then drop the staging buffers and the saves' process group.

        Raises:
            BackgroundSaveError: if a save failed.
        """
        try:
            self.wait()
        finally:
            self._stager.close()
            # A group left for interpreter exit to destroy can abort the process there (its C++
            # threads outlive Python's); nothing uses it once every save has finished.
            group, self._group = self._group, None
            if group is not None and dist.is_initialized():
                dist.destroy_process_group(group)

    def _completed(self) -> int:
        return self._pending[0][2] - 1 if self._pending else self._submitted

    def _run_due_removals(self, completed: int) -> None:
        while self._removals and self._removals[0][2] <= completed:
            _, remove, _ = self._removals.popleft()
            remove()

    def _fail(self, url: str, error: BaseException) -> None:
        """Wait for the later saves too (they use the same process group), drop every queued removal
        and raise ``error`` as a :class:`BackgroundSaveError`."""
        for _, later, _ in self._pending:
            later.exception()
        self._pending.clear()
        dropped = [removed for removed, _, _ in self._removals]
        self._removals.clear()
        if dropped:
            log.warning("skipped removing %s: the newer save %s failed", ", ".join(dropped), url)
        raise BackgroundSaveError(
            f"the asynchronous sharded save to {url} failed, nothing was committed there (the checkpoints "
            f"before it were kept): {error}",
            url,
        ) from error

    def _process_group(self) -> Any:
        """A gloo group of all ranks for the background saves' collectives (created on first use, on
        every rank at the same save): training's collectives on the default group never interleave."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        if self._group is None:
            self._group = dist.new_group(backend="gloo")
        return self._group
