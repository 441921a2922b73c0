"""Asynchronous uploads from a helper process, so serialization and HTTP never hold the trainer's GIL.

On a GPU node the trainer's Python thread launches every kernel; a background thread that pickles or
runs botocore slows training however many cores the node has. :class:`UploadProcess` hands each
snapshot to one persistent helper process instead, which runs the same :func:`write_checkpoint` a
synchronous save runs. It is a fresh interpreter (started with ``subprocess``, never ``os.fork``: the
trainer has threads), started at the first asynchronous save, on the saver's worker thread, and it
loads only torch and s3_utils. It never re-imports the training script, so a script needs no
``if __name__ == "__main__":`` guard.

The snapshot's tensors live in shared slabs (:mod:`~s3_checkpoint_io.background.host_buffers`); what
crosses the socket is the checkpoint pickled with each storage named by its slab region, a few bytes per
tensor. The slabs' descriptors go over once per slab (``SCM_RIGHTS``). The upload process maps the same
pages and ``torch.save`` reads them in place: no copy of the tensor bytes anywhere.

A checkpoint holding objects defined in the training script's ``__main__`` cannot be unpickled in
another interpreter: :meth:`UploadProcess.upload` raises :class:`NeedsThisInterpreter` for it, before
anything is sent, and the caller writes it itself (:mod:`~s3_checkpoint_io.background.snapshot_writer`).

A helper that dies (OOM-killed, SIGKILL) is noticed at once (its socket closes, its pidfd becomes
readable): that save fails with :class:`~s3_checkpoint_io.errors.UploadProcessError` naming the
signal, nothing is published (the multipart upload it began stays incomplete, never completed), and
the next save starts a new helper.

The helper runs ``nice`` levels below the trainer (``upload_process_nice``, 10 by default): where the
helper and the training loop compete for a core, the scheduler gives the loop the core first and the
upload what the loop leaves. It changes no guarantee: saves still complete in order, and an upload
still finishes while training runs, only more slowly where training keeps every core busy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing.connection
import os
import pickle
import signal
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch

from s3_checkpoint_io.background.fork import start_fresh_after_fork
from s3_checkpoint_io.background.host_buffers import HostBufferPool, shared_slabs_supported
from s3_checkpoint_io.background.wire import MAX_FDS_PER_MESSAGE, receive_message, send_message
from s3_checkpoint_io.errors import UploadProcessError
from s3_utils import S3ClientConfig, TransferConfig, TransferStats
from s3_utils.request_rate import process_limiter

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 30.0
_POLL_S = 0.5  # only where there is no pidfd to wait on
# The helper imports this copy of the package (its folder comes first on sys.path) and only the
# modules it needs: the package's __init__ imports nothing heavy, so Lightning is never loaded there.
_BOOTSTRAP = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from s3_checkpoint_io.background.upload_helper import serve\n"
    "serve(int(sys.argv[2]), int(sys.argv[3]))\n"
)
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def upload_process_supported() -> bool:
    """Whether snapshots can be shared with another process here (Linux ``memfd`` and ``SCM_RIGHTS``)."""
    return shared_slabs_supported() and hasattr(socket, "send_fds")


class NeedsThisInterpreter(Exception):
    """The checkpoint holds an object defined in ``__main__``, which another interpreter cannot load.

    Raised by :meth:`UploadProcess.upload` before anything reaches the helper; its message names the
    object.
    """


class UploadProcess:
    """One helper process that serializes and uploads snapshots; used from one worker thread at a time.

    Args:
        client_config: where S3 is (the helper builds its own ``S3Store`` from it).
        transfer_config: part size, concurrency, retries and checksums for the uploads.
        nice: how many nice levels below this process the helper runs (0 to 19; 0: the same).
    """

    def __init__(self, client_config: S3ClientConfig, transfer_config: TransferConfig, nice: int = 0) -> None:
        self._client_config = client_config
        self._transfer_config = transfer_config
        self._nice = nice
        self._reset()
        start_fresh_after_fork(self, UploadProcess._forget_after_fork)

    def _reset(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._pidfd: int | None = None
        self._known_slabs: set[int] = set()

    def _forget_after_fork(self) -> None:
        # The helper belongs to the parent: drop this copy's ends without a word to it (closing our
        # copy of the socket lets the helper see the parent's death as end of file).
        if self._sock is not None:
            self._sock.close()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
        self._reset()

    @property
    def pid(self) -> int | None:
        """The helper's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def upload(self, state: Any, url: str, pool: HostBufferPool) -> TransferStats:
        """Serialize and upload the snapshot ``state`` (its tensors in ``pool``'s slabs) to ``url``.

        Returns:
            The upload's statistics, as counted by the writer in the helper.

        Raises:
            NeedsThisInterpreter: if ``state`` holds an object of ``__main__`` (nothing was sent).
            UploadProcessError: if the helper died during the upload (nothing is published), or
                raised an exception that could not be sent back as itself.
            Exception: what pickling the checkpoint raised, or the helper's exception (an S3 error
                keeps its class), with the helper's traceback as its ``__cause__``.
        """
        payload, slab_ids = _pickle_snapshot(state, pool)
        self._ensure_started()
        try:
            self._send_slabs(pool, slab_ids)
            forget = tuple(self._known_slabs - set(pool.slabs()))
            self._known_slabs -= set(forget)
            self._send(("upload", url, payload, forget))
            reply = self._receive(url)
        except UploadProcessError:
            self._collect_dead_process()
            raise
        if reply[0] == "uploaded":
            stats: TransferStats = reply[1]
            return stats
        raise _error_from(reply, url)

    def close(self) -> None:
        """Stop the helper (after its current upload) and wait for it; a later upload starts a new one."""
        process, sock = self._process, self._sock
        if process is None or sock is None:
            return
        with contextlib.suppress(OSError):
            send_message(sock, ("stop",))
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning(
                "the checkpoint upload process %d did not stop in %ss; killing it",
                process.pid,
                _STOP_TIMEOUT_S,
            )
            process.kill()
            process.wait()
        self._close_handles()

    # -- internals -----------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        if self._process is not None:
            self._collect_dead_process()
        if self._transfer_config.adaptive_request_rate:
            process_limiter()  # the helper joins this process's request-rate table, named in os.environ
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, _PACKAGE_PARENT, str(theirs.fileno()), str(self._nice)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._process, self._sock = process, ours
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(process.pid)
        level = logging.getLogger("s3_utils").getEffectiveLevel()
        sys_path = tuple(str(Path(entry).resolve()) if entry else os.getcwd() for entry in sys.path)
        self._send(("start", self._client_config, self._transfer_config, sys_path, level))
        log.debug("started the checkpoint upload process %d", process.pid)

    def _send_slabs(self, pool: HostBufferPool, slab_ids: set[int]) -> None:
        slabs = pool.slabs()
        new = [slabs[slab_id] for slab_id in sorted(slab_ids - self._known_slabs)]
        for start in range(0, len(new), MAX_FDS_PER_MESSAGE):
            batch = new[start : start + MAX_FDS_PER_MESSAGE]
            self._send(("slabs", tuple((slab.id, slab.size) for slab in batch)), [slab.fd for slab in batch])
            self._known_slabs.update(slab.id for slab in batch)

    def _send(self, message: Any, fds: list[int] | None = None) -> None:
        assert self._sock is not None
        try:
            send_message(self._sock, message, fds or [])
        except OSError as exc:
            raise self._died(str(message[1]) if message[0] == "upload" else "a checkpoint") from exc

    def _receive(self, url: str) -> Any:
        assert self._sock is not None
        assert self._process is not None
        waitables: list[Any] = [self._sock] if self._pidfd is None else [self._sock, self._pidfd]
        while True:
            ready = multiprocessing.connection.wait(waitables, None if self._pidfd is not None else _POLL_S)
            if self._sock in ready:
                try:
                    reply, _ = receive_message(self._sock)
                except (EOFError, OSError) as exc:
                    raise self._died(url) from exc
                return reply
            if ready or self._process.poll() is not None:  # exited without answering
                raise self._died(url)

    def _died(self, url: str) -> UploadProcessError:
        assert self._process is not None
        try:
            code = self._process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # the socket broke, but the process lingers: end it
            self._process.kill()
            code = self._process.wait()
        how = f"exited with status {code}"
        if code < 0:
            how = f"died with signal {-code} ({_signal_name(-code)})"
        hint = " (SIGKILL is what the kernel's out-of-memory killer sends)" if code == -signal.SIGKILL else ""
        return UploadProcessError(
            f"the checkpoint upload process for {url} {how}{hint}; nothing was published there (the "
            "multipart upload it began stays incomplete, invisible to readers: `s3ckpt cleanup` removes "
            "it); the next save starts a new upload process"
        )

    def _collect_dead_process(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_handles()

    def _close_handles(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
        self._reset()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


class _SnapshotPickler(pickle.Pickler):
    """Pickles a snapshot with every slab storage named by its region instead of copied."""

    def __init__(self, file: io.BytesIO, pool: HostBufferPool) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._pool = pool
        self.slab_ids: set[int] = set()
        self._empty: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.storage.TypedStorage):
            untyped, dtype = obj._untyped_storage, obj.dtype
        elif isinstance(obj, torch.UntypedStorage):
            untyped, dtype = obj, None
        else:
            if isinstance(obj, type | types.FunctionType) and obj.__module__ == "__main__":
                raise NeedsThisInterpreter(f"{obj.__qualname__!r}")
            return None
        if untyped.nbytes() == 0 and untyped.device.type == "cpu":
            # Empty storages have no buffer; each is still its own storage (slab id -1, -2, ...).
            number = self._empty.setdefault(untyped._cdata, len(self._empty) + 1)
            return (-number, 0, 0, dtype)
        region = self._pool.region_of(untyped)
        if region is None:
            return None  # not a snapshot buffer (a tensor rebuilt through torch.save): pickled whole
        self.slab_ids.add(region.slab_id)
        return (region.slab_id, region.offset, region.nbytes, dtype)


def _pickle_snapshot(state: Any, pool: HostBufferPool) -> tuple[bytes, set[int]]:
    buffer = io.BytesIO()
    pickler = _SnapshotPickler(buffer, pool)
    pickler.dump(state)
    return buffer.getvalue(), pickler.slab_ids


def _error_from(reply: tuple[Any, ...], url: str) -> BaseException:
    _, data, description, remote_traceback = reply
    error: BaseException | None = None
    if data is not None:
        with contextlib.suppress(Exception):
            error = pickle.loads(data)
    if error is None:
        error = UploadProcessError(f"{description} (raised in the checkpoint upload process for {url})")
    error.__cause__ = _RemoteTraceback(remote_traceback)
    return error


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in the upload process (as ``concurrent.futures`` does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'
