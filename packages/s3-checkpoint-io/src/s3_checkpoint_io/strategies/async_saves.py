"""Asynchronous sharded saves of the Lightning strategies: ``dcp.async_save`` on the ordered-saves engine.

What is particular to DCP lives here: staging through :class:`~s3_checkpoint_io.dcp.S3AsyncStager`,
the saves' own process group, and when a failure is raised. Every rank keeps the futures of its own
saves in flight; DCP hands a save's failure to every rank (the coordinator scatters it), and every rank
waits at the same points (the next save beyond ``max_pending``, a load, teardown), so all ranks raise
the same :class:`BackgroundSaveError` at the same call and none is left waiting in a collective.

The ordering is the engine's (:class:`~s3_checkpoint_io.background.ordered_saves.OrderedSaves`, the
one the single-file plugin uses too): each save is tracked there, and a removal (rank 0 only) queued
behind it runs once every save submitted before it has committed and is skipped if one of them failed,
so an older checkpoint is never deleted before the newer one is committed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save

from s3_checkpoint_io.background.ordered_saves import OrderedSaves
from s3_checkpoint_io.dcp import S3AsyncStager, S3StorageWriter
from s3_checkpoint_io.errors import BackgroundSaveError


class ShardedAsyncSaves:
    """The sharded saves of one strategy that run in the background, and the removals behind them.

    Args:
        max_pending: saves in flight at once (``S3CheckpointIO``'s validated ``max_pending_saves``);
            one more waits for the oldest (backpressure).
    """

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._in_flight: collections.deque[tuple[str, Future[Any]]] = collections.deque()
        self._ordered = OrderedSaves(max_pending)
        self._stager = S3AsyncStager(max_buffer_sets=max_pending + 1)
        self._group: Any = None

    def save(self, state: dict[str, Any], url: str, writer: S3StorageWriter) -> None:
        """Stage ``state`` (blocks until copied) and upload it in the background (all ranks).

        Raises:
            BackgroundSaveError: if an earlier save failed (then this one is not started), or, on
                rank 0, a removal behind the saves.
        """
        self.wait(keep=self.max_pending - 1)
        future = dcp_async_save(
            state, storage_writer=writer, async_stager=self._stager, process_group=self._process_group()
        )
        # A stager that returns the staged state (ours does) makes async_save return the upload future.
        assert isinstance(future, Future)
        self._in_flight.append((url, future))
        self._ordered.track(url, future)

    def remove_after_pending(self, url: str, remove: Callable[[], None]) -> None:
        """Run ``remove`` (in the background) once every save submitted so far has committed.

        It is skipped, with a warning, if one of those saves fails; if it raises, the next
        :meth:`save`, :meth:`wait` or :meth:`close` raises a :class:`BackgroundSaveError` naming ``url``.
        """
        self._ordered.submit_after_saves(url, "removal", remove)

    def wait(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` saves are in flight (with ``keep=0``, for the removals too).

        Raises:
            BackgroundSaveError: naming the first failed save (the removals behind it are skipped), or
                a removal that failed.
        """
        while len(self._in_flight) > keep:
            url, future = self._in_flight.popleft()
            try:
                future.result()
            except (Exception, CheckpointException) as error:  # DCP's is a BaseException
                self._fail(url, error)
        if not self._in_flight:
            self._ordered.wait()
        self._ordered.raise_failures()

    def close(self) -> None:
        """Wait for everything outstanding, then drop the staging buffers and the saves' process group.

        Raises:
            BackgroundSaveError: if a save or a removal failed.
        """
        try:
            self.wait()
        finally:
            self._ordered.close()
            self._stager.close()
            # A group left for interpreter exit to destroy can abort the process there (its C++
            # threads outlive Python's); nothing uses it once every save has finished.
            group, self._group = self._group, None
            if group is not None and dist.is_initialized():
                dist.destroy_process_group(group)

    def _fail(self, url: str, error: BaseException) -> None:
        """Wait for the later saves too (they use the same process group) and raise ``error`` as a
        :class:`BackgroundSaveError`; the engine skips every removal queued behind the failed save."""
        for _, later in self._in_flight:
            later.exception()
        self._in_flight.clear()
        self._ordered.wait()  # the removals behind the failed save are skipped before it is reported
        self._ordered.forget_tracked_failures()
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
