"""``S3CheckpointIO``: a Lightning ``CheckpointIO`` that streams checkpoints to and from S3."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from lightning.fabric.plugins import CheckpointIO

from s3_checkpoint_io.background.fork import start_fresh_after_fork
from s3_checkpoint_io.background.ordered_saves import OrderedSaves
from s3_checkpoint_io.background.snapshot import Snapshot, take_snapshot
from s3_checkpoint_io.background.snapshot_writer import SnapshotWriter
from s3_checkpoint_io.engine.load import download_target, load_from_buffer
from s3_checkpoint_io.engine.memory_file import MemoryFile, memory_files_supported
from s3_checkpoint_io.engine.write import write_checkpoint
from s3_checkpoint_io.lightning import spawn_handoff
from s3_checkpoint_io.lightning.compat import override
from s3_checkpoint_io.lightning.save_stats import SaveStats
from s3_checkpoint_io.lightning.settings import CheckpointIOSettings
from s3_checkpoint_io.node_reads import read_once_per_node
from s3_checkpoint_io.rank_zero import distributed_ready
from s3_dirpath_utils import normalize_s3_url, require_s3_url
from s3_utils import ObjectInfo, S3ClientConfig, S3NotFoundError, S3Store, TransferConfig, TransferStats
from s3_utils.checkpoint_names import parse_prefix_with_step
from s3_utils.limits import MiB

log = logging.getLogger(__name__)

_Target = TypeVar("_Target", MemoryFile, bytearray, MemoryFile | bytearray)

PathLike = str | os.PathLike[str]


class S3CheckpointIO(CheckpointIO):
    """Save and load Lightning checkpoints on S3, synchronously or in the background.

    Saving streams ``torch.save`` into a multipart upload: the checkpoint is never held whole in memory
    and nothing touches local disk; extra memory is about ``(max_write_concurrency + 2) * chunk_size_MB``
    MiB. An object appears at the path only when its upload completes, so a failed or killed save leaves
    the previous object there untouched.

    With ``async_checkpointing=True``, ``save_checkpoint`` returns once a snapshot of the state exists
    (tensors copied into shared-memory host buffers reused between saves, page-locked ones for CUDA
    tensors) and a helper process, started once, serializes and uploads it (``async_uploader="thread"``:
    a thread of this process does). At most ``max_pending_saves`` saves are outstanding;
    another waits for the oldest. ``remove_checkpoint`` is queued behind every earlier save, so the
    previous best is never deleted before the new one is in S3, and it is skipped if such a save fails.
    A background failure is logged at once and raised at the next ``save_checkpoint``,
    ``remove_checkpoint``, ``wait_for_saves`` or ``teardown``. Pending saves finish before the
    interpreter exits; a forked child starts with no pending saves of its own, and so does a pickled
    copy (``strategy="ddp_spawn"`` sends one to each process), which keeps only the configuration.

    Loading is one HEAD plus parallel ranged GETs into an in-memory file that ``torch.load`` maps
    (``mmap=True``); each storage is copied out and its pages freed as it is reached, so a load needs
    one checkpoint's worth of memory and no loaded tensor keeps the rest of the download alive.
    Unpickling can run arbitrary code: load checkpoints you did not write with ``weights_only=True``.

    A load every rank makes at once (a DDP resume: :meth:`load_checkpoint_on_every_rank`, or any
    ``load_checkpoint`` inside :meth:`every_rank_loads`, which ``S3ModelCheckpoint`` arms for
    Lightning's resume) downloads the checkpoint once per node and shares its bytes with the node's other
    ranks over gloo (:mod:`~s3_checkpoint_io.node_reads`); a lone ``load_checkpoint`` downloads on the
    rank that calls it.

    Args:
        dirpath: the ``s3://bucket/prefix`` the checkpoints live under.
        chunk_size_MB: multipart part and download range size in MiB (5 to 5120).
        max_read_concurrency: ranged GETs in flight while loading.
        max_write_concurrency: part uploads in flight while saving.
        async_checkpointing: upload in the background (see above).
        endpoint_url: an S3-compatible endpoint, e.g. ``http://127.0.0.1:9000``; default from
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS.
        region: AWS region; default from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.
        profile: a named AWS profile; default from ``AWS_PROFILE``.
        client_config: a complete ``S3ClientConfig`` instead of the three settings above.
        async_uploader: ``"process"`` (default): asynchronous saves are serialized and uploaded by a
            helper process, off this interpreter's GIL; ``"thread"``: by a thread of this process.
            Where shared memory is not available (not Linux), ``"process"`` runs as ``"thread"``.
        upload_process_nice: how many nice levels below this process the upload helper runs (0 to
            19, default 10), so that training gets a core first where the two compete; 0: the same
            priority as training.
        max_pending_saves: asynchronous saves outstanding at once (each holds one snapshot).
        clean_same_step_last: after saving ``...step=<n>-...last.ckpt``, delete the other ``-last``
            checkpoints of the same step (NeMo's behaviour; off by default).
        history_size: how many entries ``save_history`` keeps.
        read_once_per_node: a load every rank makes at once downloads once per node (default); False:
            every rank downloads it.

    Raises:
        ValueError: if ``dirpath`` is not an S3 URL (use Lightning's ``TorchCheckpointIO`` for local
            paths) or a setting is out of range.
    """

    def __init__(
        self,
        dirpath: PathLike,
        chunk_size_MB: float = 64,
        max_read_concurrency: int = 15,
        max_write_concurrency: int = 10,
        async_checkpointing: bool = False,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        client_config: S3ClientConfig | None = None,
        async_uploader: str = "process",
        upload_process_nice: int = 10,
        max_pending_saves: int = 1,
        clean_same_step_last: bool = False,
        history_size: int = 1000,
        read_once_per_node: bool = True,
    ) -> None:
        super().__init__()
        self.dirpath = require_s3_url(dirpath, "S3CheckpointIO dirpath", _LOCAL_HINT).rstrip("/")
        self.settings = CheckpointIOSettings(
            chunk_size_MB=chunk_size_MB,
            max_read_concurrency=max_read_concurrency,
            max_write_concurrency=max_write_concurrency,
            async_checkpointing=async_checkpointing,
            async_uploader=async_uploader,
            upload_process_nice=upload_process_nice,
            max_pending_saves=max_pending_saves,
            clean_same_step_last=clean_same_step_last,
            history_size=history_size,
            read_once_per_node=read_once_per_node,
        )
        self.client_config = S3ClientConfig.resolve(
            client_config, endpoint_url=endpoint_url, region=region, profile=profile
        )
        self._write_transfer = TransferConfig(
            chunk_size_MB=chunk_size_MB, max_concurrency=max_write_concurrency
        )
        self._read_transfer = TransferConfig(
            chunk_size_MB=chunk_size_MB, max_concurrency=max_read_concurrency
        )
        self._start_runtime()

    def _start_runtime(self) -> None:
        # Everything but the configuration: what a new object, or one just unpickled, starts with.
        self._saver = OrderedSaves(self.settings.max_pending_saves)
        self._snapshot_writer = SnapshotWriter(
            self.client_config,
            self._write_transfer,
            self.settings.async_uploader == "process",
            self.settings.upload_process_nice,
        )
        self._history: collections.deque[SaveStats] = collections.deque(maxlen=self.settings.history_size)
        self._saves_started = 0
        self._start_fresh()
        start_fresh_after_fork(self, S3CheckpointIO._start_fresh)

    def __getstate__(self) -> dict[str, Any]:
        """The configuration only, for ``pickle`` (``ddp_spawn`` sends the plugin to each process).

        Locks, clients, buffers, the background saver, the upload process and the save history belong
        to this object; a copy starts fresh, with no pending saves, and ``self`` keeps its own.
        Explicit credentials in ``client_config`` travel with the copy, as the copy needs them.
        """
        state = self.__dict__.copy()
        for name in _RUNTIME_ATTRIBUTES:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the configuration from :meth:`__getstate__` and start fresh runtime state."""
        self.__dict__.update(state)
        self._start_runtime()

    def _start_fresh(self) -> None:
        # Also what a forked child runs (the saver and the snapshot writer reset themselves): the
        # parent's clients, their connection pools and threads, and any lock held at the fork are left
        # to the parent.
        self._stores_lock = threading.Lock()
        self._write_store: S3Store | None = None
        self._read_store: S3Store | None = None
        self._history_lock = threading.Lock()
        self._every_rank = _EveryRankLoads()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dirpath={self.dirpath!r}, async_checkpointing="
            f"{self.settings.async_checkpointing}, endpoint={self.client_config.endpoint_name!r})"
        )

    # -- what a benchmark or a callback reads -------------------------------------------------------

    @property
    def async_checkpointing(self) -> bool:
        """Whether saves upload in the background."""
        return self.settings.async_checkpointing

    @property
    def last_save_stats(self) -> SaveStats | None:
        """The stats of the most recently completed save, or None before the first one."""
        with self._history_lock:
            return self._history[-1] if self._history else None

    @property
    def save_history(self) -> tuple[SaveStats, ...]:
        """Stats of the last ``history_size`` completed saves, oldest first."""
        with self._history_lock:
            return tuple(self._history)

    @property
    def pending_saves(self) -> list[str]:
        """URLs whose asynchronous save is queued or uploading, oldest first."""
        return self._saver.pending_saves()

    @property
    def busy(self) -> bool:
        """Whether any asynchronous save or queued removal has not finished yet."""
        return self._saver.busy()

    def wait_for_saves(self, timeout: float | None = None) -> None:
        """Block until every queued save and removal has finished, then report any failure.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Raises:
            TimeoutError: if saves are still running after ``timeout``.
            BackgroundSaveError: if a background save or removal failed.
        """
        self._saver.wait(timeout)
        self._saver.raise_failures()

    # -- the Lightning CheckpointIO API --------------------------------------------------------------

    @override
    def save_checkpoint(self, checkpoint: Any, path: PathLike, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` with ``torch.save``, streamed into a multipart upload.

        Args:
            checkpoint: the state to save: Lightning's checkpoint dict, or any object ``torch.save``
                can write (a tensor, a list, a plain dict); :meth:`load_checkpoint` gives it back.
            path: an ``s3://bucket/key`` URL (or the local file ``ddp_spawn`` hands its final weights
                over in, which Lightning's ``TorchCheckpointIO`` writes).
            storage_options: not supported; must be None.

        Raises:
            TypeError: if ``storage_options`` is given.
            ValueError: if ``path`` is not a valid S3 URL.
            BackgroundSaveError: if an earlier asynchronous save or removal failed.
            TypeError: (asynchronous) if an object in ``checkpoint`` cannot be snapshotted.
            Exception: (synchronous) whatever ``torch.save`` or the upload raised; no object is
                written at ``path`` then.
        """
        if storage_options is not None:
            raise TypeError(
                "`Trainer.save_checkpoint(..., storage_options=...)` with `storage_options` arg is not "
                f"supported for `{type(self).__name__}`; subclass it to define how to use them"
            )
        handoff = spawn_handoff.handoff_path(path)
        if handoff is not None:  # ddp_spawn handing the final weights to the main process
            spawn_handoff.save(checkpoint, handoff)
            return
        url = _as_url(path)
        self._saver.raise_failures()
        started = time.perf_counter()
        self._saves_started += 1
        sequence = self._saves_started
        if not self.settings.async_checkpointing:
            upload = self._write(checkpoint, url)
            stall_s = time.perf_counter() - started
            self._finish_save(SaveStats.of_upload(sequence, url, upload, stall_s, False))
            return

        # The asynchronous save, in the order its data flows: snapshot (here, into reused host
        # buffers), then serialize and upload (the snapshot writer, on the saver's worker thread).
        with self._saver.reserve_slot() as slot:  # backpressure: max_pending_saves
            snapshot = take_snapshot(checkpoint, self._snapshot_writer.buffers)
            stall_s = time.perf_counter() - started
            slot.submit(url, functools.partial(self._write_snapshot, snapshot, url, sequence, stall_s))

    def _write_snapshot(self, snapshot: Snapshot, url: str, sequence: int, stall_s: float) -> None:
        # The job the saver's worker runs: write the snapshot, then record the save as a synchronous
        # save records its own.
        upload = self._snapshot_writer.write(snapshot, url)
        self._finish_save(SaveStats.of_upload(sequence, url, upload, stall_s, True))

    @property
    def upload_process_pid(self) -> int | None:
        """The process id of the helper uploading asynchronous saves, while it runs (for pinning it)."""
        return self._snapshot_writer.upload_process_pid

    @override
    def load_checkpoint(
        self, path: PathLike, map_location: Any | None = None, weights_only: bool | None = None
    ) -> Any:
        """Download ``path`` with parallel ranged GETs and ``torch.load`` it from memory.

        Unpickling runs code named in the checkpoint: use ``weights_only=True`` for checkpoints whose
        origin you do not trust.

        Args:
            path: an ``s3://bucket/key`` URL (or ``ddp_spawn``'s local hand-off file, which Lightning's
                ``TorchCheckpointIO`` reads).
            map_location: as for ``torch.load``; None loads every tensor onto the CPU, as Lightning's
                ``TorchCheckpointIO`` does.
            weights_only: as for ``torch.load``; None uses torch's default (True since torch 2.6).

        Returns:
            What was saved there: usually Lightning's checkpoint dict, else the object as saved (a
            tensor, a list, ...), as Lightning's ``TorchCheckpointIO`` returns it.

        Raises:
            FileNotFoundError: if there is no object at ``path``.
            S3NotFoundError: (also a ``FileNotFoundError``) if the bucket does not exist.
            CorruptCheckpointError: if the object is not a readable torch checkpoint.
            WeightsOnlyLoadError: if ``weights_only`` loading refused an object in it.
        """
        handoff = spawn_handoff.handoff_path(path)
        if handoff is not None:  # ddp_spawn handing the final weights to the main process
            return spawn_handoff.load(handoff, map_location, weights_only)
        return self._load(_as_url(path), map_location, weights_only, self._every_rank.armed)

    def load_checkpoint_on_every_rank(
        self, path: PathLike, map_location: Any | None = None, weights_only: bool | None = None
    ) -> Any:
        """:meth:`load_checkpoint`, called by every rank at once: downloaded once per node, not per rank.

        A collective over the default process group when one with more than one rank exists (else the
        same as :meth:`load_checkpoint`): every rank must call it, for the same ``path``. One rank per
        node downloads the checkpoint, the others receive its bytes over gloo, and each rank
        ``torch.load``s its own copy (:mod:`~s3_checkpoint_io.node_reads`). With
        ``read_once_per_node=False`` every rank downloads it.

        Args:
            path: an ``s3://bucket/key`` URL, the same on every rank.
            map_location: as for :meth:`load_checkpoint`.
            weights_only: as for :meth:`load_checkpoint`.

        Returns:
            What was saved there, on every rank.

        Raises:
            FileNotFoundError: if there is no object at ``path`` (on every rank; a note names the
                rank that read it).
            ValueError: if the ranks asked for different paths.
            NodeReaderLostError: if a rank stopped answering (killed) before every rank had the bytes.
            CorruptCheckpointError: if the object is not a readable torch checkpoint.
            Exception: any other error of the reading rank, on every rank.
        """
        return self._load(_as_url(path), map_location, weights_only, True)

    @contextlib.contextmanager
    def every_rank_loads(self) -> Iterator[None]:
        """Make each :meth:`load_checkpoint` in the block :meth:`load_checkpoint_on_every_rank`.

        For code that knows every rank loads the same checkpoint at the same moment, such as Lightning's
        resume (``S3ModelCheckpoint`` arms it there). A rank loading alone inside the block would wait
        for the others: keep the block to the collective load. Applies to the thread that entered it.
        """
        self._every_rank.enter()
        try:
            yield
        finally:
            self._every_rank.leave()

    def _load(self, url: str, map_location: Any, weights_only: bool | None, every_rank: bool) -> Any:
        if url in self._saver.pending_saves():
            self._saver.wait()
        shared = every_rank and self.settings.read_once_per_node and _can_read_once_per_node()
        started = time.perf_counter()
        file: MemoryFile | bytearray
        if shared:
            file, download_s = self._shared_download(url)
        else:
            file, download_s = self._download(url)
        size = file.size if isinstance(file, MemoryFile) else len(file)
        try:
            checkpoint = _load_file(file, url, "cpu" if map_location is None else map_location, weights_only)
        finally:
            if isinstance(file, MemoryFile):
                file.close()
        log.info(
            "loaded %s: %d bytes, download %.3fs (%.1f MiB/s)%s, total %.3fs",
            url,
            size,
            download_s,
            size / MiB / download_s if download_s > 0 else 0.0,
            " (read once per node)" if shared else "",
            time.perf_counter() - started,
        )
        return checkpoint

    def _download(self, url: str) -> tuple[MemoryFile | bytearray, float]:
        """``url``'s bytes on this rank, where :func:`download_target` puts a checkpoint of its size."""
        started = time.perf_counter()
        file, _ = self._download_into(url, download_target)
        return file, time.perf_counter() - started

    def _download_memory_file(self, url: str) -> tuple[MemoryFile, ObjectInfo]:
        """``url``'s bytes in an in-memory file, whatever its size (read once per node shares it)."""
        return self._download_into(url, MemoryFile)

    def _download_into(self, url: str, make: Callable[[int], _Target]) -> tuple[_Target, ObjectInfo]:
        """Download ``url`` into ``make(size)`` once its HEAD gave the size."""
        made: list[_Target] = []

        def allocate(info: ObjectInfo) -> memoryview | bytearray:
            made.append(make(info.size))
            return made[0].buffer() if isinstance(made[0], MemoryFile) else made[0]

        try:
            with _missing_checkpoint(url):
                info = self._store(write=False).download_to(url, allocate)
        except BaseException:
            for target in made:
                if isinstance(target, MemoryFile):
                    target.close()
            raise
        return made[0], info

    def _shared_download(self, url: str) -> tuple[MemoryFile, float]:
        started = time.perf_counter()
        file = read_once_per_node(url, functools.partial(self._download_memory_file, url))
        return file, time.perf_counter() - started

    @override
    def remove_checkpoint(self, path: PathLike) -> None:
        """Delete the checkpoint at ``path``, after every earlier save is durable.

        With asynchronous saves the removal is queued behind them and returns at once; it is skipped
        (with a warning) if one of them fails, so the checkpoint it replaces stays.

        Args:
            path: an ``s3://bucket/key`` URL (or ``ddp_spawn``'s local hand-off file, which Lightning's
                ``TorchCheckpointIO`` removes).

        Raises:
            BackgroundSaveError: if an earlier asynchronous save or removal failed.
        """
        handoff = spawn_handoff.handoff_path(path)
        if handoff is not None:  # ddp_spawn handing the final weights to the main process
            spawn_handoff.remove(handoff)
            return
        url = _as_url(path)
        self._saver.raise_failures()
        if self.settings.async_checkpointing:
            self._saver.submit_after_saves(url, "removal", functools.partial(self._delete, url))
        else:
            self._delete(url)

    def copy_checkpoint(self, src: PathLike, dst: PathLike) -> None:
        """Make ``dst`` a copy of the checkpoint at ``src``, inside S3 (the bytes are not uploaded again).

        A server-side copy (:meth:`S3Store.copy`): ``dst`` appears whole or not at all, the previous
        object there stays until then, and a store that refuses copies gets the bytes moved through
        this client instead. With asynchronous saves the copy is queued behind every earlier save, so it
        never reads ``src`` before its save is durable, and it is skipped (with a warning) if one of
        them fails; it returns at once. Otherwise it copies now.

        Args:
            src: the ``s3://bucket/key`` of a checkpoint saved (or being saved) through this plugin.
            dst: the ``s3://bucket/key`` to write.

        Raises:
            ValueError: if a path is not a valid S3 URL.
            BackgroundSaveError: if an earlier asynchronous save, removal or copy failed.
            S3Error: (synchronous) if the copy failed; nothing new is written at ``dst`` then.
        """
        source, target = _as_url(src), _as_url(dst)
        self._saver.raise_failures()
        if self.settings.async_checkpointing:
            self._saver.submit_after_saves(target, "copy", functools.partial(self._copy, source, target))
        else:
            self._copy(source, target)

    def _copy(self, source: str, target: str) -> None:
        started = time.perf_counter()
        stats = self._store(write=True).copy(source, target)
        log.info(
            "copied %s to %s: %d bytes in %.3fs (%s)",
            source,
            target,
            stats.bytes,
            time.perf_counter() - started,
            "server-side" if stats.operation == "copy" else "through this client: the store refused a copy",
        )
        if self.settings.clean_same_step_last:
            self._remove_same_step_last(target)

    @override
    def teardown(self) -> None:
        """Wait for every background save, release clients and buffers, and report any failure.

        The object stays usable: a later save starts a new worker.

        Raises:
            BackgroundSaveError: if a background save or removal failed.
        """
        try:
            self._saver.close()
        finally:
            try:
                self._snapshot_writer.close()
            finally:
                self._close_stores()
        self._saver.raise_failures()

    # -- helpers for S3ModelCheckpoint ---------------------------------------------------------------

    def exists(self, path: PathLike) -> bool:
        """Whether a checkpoint is at ``path`` or its asynchronous save is still on its way.

        Only a missing object is False: a missing bucket is an error, as for :meth:`S3Store.exists`.

        Raises:
            ValueError: if ``path`` is not a valid S3 URL.
            S3NotFoundError: if the bucket does not exist (naming it, and the endpoint to check).
            S3Error: on any other failure (access denied, endpoint not answering, ...).
        """
        url = _as_url(path)
        if url in self._saver.pending_saves():
            return True
        return self._store(write=False).exists(url)

    def list_objects(self, prefix: PathLike) -> Iterator[ObjectInfo]:
        """Every object whose URL starts with ``prefix``, streamed page by page."""
        return self._store(write=False).iter_objects(normalize_s3_url(prefix))

    # -- internals -----------------------------------------------------------------------------------

    def _store(self, write: bool) -> S3Store:
        with self._stores_lock:
            if write:
                if self._write_store is None:
                    self._write_store = S3Store(self.client_config, self._write_transfer)
                return self._write_store
            if self._read_store is None:
                self._read_store = S3Store(self.client_config, self._read_transfer)
            return self._read_store

    def _close_stores(self) -> None:
        with self._stores_lock:
            stores = [s for s in (self._write_store, self._read_store) if s is not None]
            self._write_store = self._read_store = None
        for store in stores:
            store.close()

    def _write(self, checkpoint: Any, url: str) -> TransferStats:
        return write_checkpoint(self._store(write=True), checkpoint, url)

    def _finish_save(self, stats: SaveStats) -> None:
        with self._history_lock:
            self._history.append(stats)
        log.info(
            "saved %s: %d bytes, stall %.3fs, upload %.3fs (%.1f MiB/s)%s",
            stats.path,
            stats.bytes,
            stats.stall_s,
            stats.upload_s,
            stats.mib_per_s,
            " in the background" if stats.asynchronous else "",
        )
        if self.settings.clean_same_step_last:
            self._remove_same_step_last(stats.path)

    def _remove_same_step_last(self, url: str) -> None:
        if not url.endswith("last.ckpt"):
            return
        try:
            prefix = parse_prefix_with_step(url)
        except ValueError:
            log.warning("same-step -last clean-up skipped for %s: its name has no 'step=<n>-'", url)
            return
        for info in self.list_objects(prefix):
            rest = info.url[len(prefix) :]
            if info.url != url and info.url.endswith("last.ckpt") and "/" not in rest:
                log.info("removing stale same-step checkpoint %s (superseded by %s)", info.url, url)
                self._delete(info.url)

    def _delete(self, url: str) -> None:
        self._store(write=True).delete(url)
        log.debug("removed checkpoint %s", url)


_RUNTIME_ATTRIBUTES = (
    "_saver",
    "_snapshot_writer",
    "_history",
    "_saves_started",
    "_stores_lock",
    "_write_store",
    "_read_store",
    "_history_lock",
    "_every_rank",
)
"""What ``__getstate__`` leaves out: state of one live object, rebuilt by ``_start_runtime``."""

_LOCAL_HINT = "for local paths use Lightning's TorchCheckpointIO (the default) instead"


def _as_url(path: PathLike) -> str:
    return require_s3_url(path, "S3CheckpointIO path", _LOCAL_HINT)


def _can_read_once_per_node() -> bool:
    """Whether a load every rank makes can be shared: more than one rank, and in-memory files."""
    return distributed_ready() and memory_files_supported()


@contextlib.contextmanager
def _missing_checkpoint(url: str) -> Iterator[None]:
    """A missing object at ``url`` as ``FileNotFoundError`` naming the checkpoint (a missing bucket is
    left as it is: its message names the bucket)."""
    try:
        yield
    except S3NotFoundError as exc:
        if exc.code == "NoSuchBucket":
            raise
        raise FileNotFoundError(f"checkpoint not found: no object at {url}") from exc


def _load_file(file: MemoryFile | bytearray, url: str, map_location: Any, weights_only: bool | None) -> Any:
    """``torch.load`` the downloaded bytes (mapped, for an in-memory file: see ``load_from_buffer``)."""
    if isinstance(file, bytearray):
        return load_from_buffer(file, url, map_location, weights_only)
    view = file.buffer()
    try:
        return load_from_buffer(view, url, map_location, weights_only, mapped=file)
    finally:
        view.release()


class _EveryRankLoads:
    """How deep this thread is inside :meth:`S3CheckpointIO.every_rank_loads` (per thread)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def armed(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    def enter(self) -> None:
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def leave(self) -> None:
        self._local.depth -= 1
