"""Write a snapshot to S3: serialize it and stream its parts, in the upload helper process or here.

The second half of an asynchronous single-file save, after :func:`~.snapshot.take_snapshot`:
:meth:`SnapshotWriter.write` hands the snapshot to the upload helper process
(:class:`~.upload_process.UploadProcess`), which serializes and uploads it off this interpreter's GIL.
Where that cannot be used (``async_uploader="thread"``, no shared memory on this platform, or a
checkpoint holding objects of the training script's ``__main__``), it writes the snapshot itself with
:func:`~s3_checkpoint_io.engine.write.write_checkpoint`, the function a synchronous save runs. Either
way the snapshot's host buffers go back to the pool afterwards, for the next snapshot to reuse.

Runs on the background saver's worker thread, one snapshot at a time.
"""

from __future__ import annotations

import logging
import threading

from s3_checkpoint_io.background.fork import start_fresh_after_fork
from s3_checkpoint_io.background.host_buffers import HostBufferPool
from s3_checkpoint_io.background.snapshot import Snapshot
from s3_checkpoint_io.background.upload_process import (
    NeedsThisInterpreter,
    UploadProcess,
    upload_process_supported,
)
from s3_checkpoint_io.engine.write import write_checkpoint
from s3_utils import S3ClientConfig, S3Store, TransferConfig, TransferStats

log = logging.getLogger(__name__)


class SnapshotWriter:
    """Writes snapshots taken into :attr:`buffers` to S3 and gives their buffers back.

    Args:
        client_config: where S3 is.
        transfer_config: part size, concurrency, retries and checksums for the uploads.
        use_upload_process: serialize and upload in a helper process where the platform allows it
            (``async_uploader="process"``); False writes from the calling thread.
        upload_nice: how many nice levels below this process the upload helper runs (0 to 19).

    Attributes:
        buffers: the host buffers to take snapshots into (``take_snapshot(state, writer.buffers)``),
            reused from one snapshot to the next.
    """

    def __init__(
        self,
        client_config: S3ClientConfig,
        transfer_config: TransferConfig,
        use_upload_process: bool,
        upload_nice: int = 0,
    ) -> None:
        self._client_config = client_config
        self._transfer_config = transfer_config
        self._use_upload_process = use_upload_process
        self._upload_nice = upload_nice
        self._told_about_main = False
        self._start_fresh()
        start_fresh_after_fork(self, SnapshotWriter._start_fresh)

    def _start_fresh(self) -> None:
        # Also what a forked child runs: the parent's helper process, buffers and client are the parent's.
        self.buffers = HostBufferPool()
        self._upload_process: UploadProcess | None = None
        self._store: S3Store | None = None
        self._store_lock = threading.Lock()

    @property
    def upload_process_pid(self) -> int | None:
        """The process id of the upload helper, while it runs."""
        return self._upload_process.pid if self._upload_process is not None else None

    def write(self, snapshot: Snapshot, url: str) -> TransferStats:
        """Serialize ``snapshot`` and upload it to ``url``; its buffers go back to the pool whatever happens.

        Returns:
            The upload's statistics, as counted by the writer that sent it.

        Raises:
            UploadProcessError: if the upload helper died during the upload (nothing is published).
            Exception: whatever serializing or uploading raised; no object appears at ``url`` then.
        """
        try:
            if self._use_upload_process and upload_process_supported():
                try:
                    return self._helper().upload(snapshot.state, url, self.buffers)
                except NeedsThisInterpreter as needs:
                    self._tell_about_main_once(needs)
            return write_checkpoint(self._own_store(), snapshot.state, url)
        finally:
            snapshot.state = None
            self.buffers.give_back(snapshot.borrowed)
            snapshot.borrowed = []

    def close(self) -> None:
        """Stop the upload helper, close the client and free idle buffers; a later write starts afresh."""
        try:
            if self._upload_process is not None:
                self._upload_process.close()
        finally:
            self.buffers.trim()
            with self._store_lock:
                store, self._store = self._store, None
            if store is not None:
                store.close()

    def _helper(self) -> UploadProcess:
        if self._upload_process is None:
            self._upload_process = UploadProcess(
                self._client_config, self._transfer_config, self._upload_nice
            )
        return self._upload_process

    def _own_store(self) -> S3Store:
        with self._store_lock:
            if self._store is None:
                self._store = S3Store(self._client_config, self._transfer_config)
            return self._store

    def _tell_about_main_once(self, needs: NeedsThisInterpreter) -> None:
        if self._told_about_main:
            return
        self._told_about_main = True
        log.info(
            "the checkpoint holds %s, defined in the training script (__main__), which the upload "
            "process cannot import; such checkpoints are written from a thread of this process",
            needs,
        )
