"""The validated settings of one :class:`~s3_checkpoint_io.S3CheckpointIO`."""

from __future__ import annotations

from dataclasses import dataclass

from s3_checkpoint_io.background.upload_helper import MAX_NICE
from s3_utils.limits import check_part_size_MB

ASYNC_UPLOADERS = ("process", "thread")
"""Where asynchronous saves may run: a helper process, or a thread of the trainer's process."""


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: it must be an int >= {minimum}")


@dataclass(frozen=True)
class CheckpointIOSettings:
    """How checkpoints move between a training process and S3.

    Attributes:
        chunk_size_MB: part size in MiB for multipart uploads and ranged downloads (5 to 5120).
        max_read_concurrency: ranged GETs in flight while loading (>= 1).
        max_write_concurrency: part uploads in flight while saving (>= 1).
        async_checkpointing: return from ``save_checkpoint`` once a snapshot exists and upload it in
            the background.
        async_uploader: where asynchronous saves are serialized and uploaded: ``"process"`` (a helper
            process, so the trainer's interpreter is never held up by them) or ``"thread"`` (a thread
            of the trainer's process).
        upload_process_nice: how many nice levels below the trainer the upload helper process runs
            (0 to 19; 0: the trainer's own priority). Where the helper and training compete for a
            core, the kernel's scheduler then gives training the core first and the upload the time
            training leaves; the save takes longer only when training keeps every core busy.
        max_pending_saves: asynchronous saves that may be queued or uploading at once (>= 1); a
            further save waits for the oldest (backpressure). Each holds one snapshot of the state.
        clean_same_step_last: after saving ``...step=<n>-...last.ckpt``, delete older ``-last``
            checkpoints of the same step (NeMo's clean-up of stale ``-last`` files).
        history_size: how many :class:`~s3_checkpoint_io.SaveStats` ``save_history`` keeps (>= 1).
        read_once_per_node: a load every rank makes together (a DDP resume) downloads the checkpoint
            on one rank per node and shares its bytes with the node's other ranks
            (:mod:`~s3_checkpoint_io.node_reads`); False: every rank downloads it.

    Raises:
        ValueError: at construction, naming the field, the value and the allowed range.
    """

    chunk_size_MB: float = 64
    max_read_concurrency: int = 15
    max_write_concurrency: int = 10
    async_checkpointing: bool = False
    async_uploader: str = "process"
    upload_process_nice: int = 10
    max_pending_saves: int = 1
    clean_same_step_last: bool = False
    history_size: int = 1000
    read_once_per_node: bool = True

    def __post_init__(self) -> None:
        check_part_size_MB(self.chunk_size_MB)
        _check_int("max_read_concurrency", self.max_read_concurrency, 1)
        _check_int("max_write_concurrency", self.max_write_concurrency, 1)
        _check_int("max_pending_saves", self.max_pending_saves, 1)
        _check_int("history_size", self.history_size, 1)
        _check_int("upload_process_nice", self.upload_process_nice, 0)
        if self.upload_process_nice > MAX_NICE:
            raise ValueError(
                f"upload_process_nice={self.upload_process_nice!r} is invalid: it must be an int from 0 "
                f"to {MAX_NICE}"
            )
        if self.async_uploader not in ASYNC_UPLOADERS:
            raise ValueError(
                f"async_uploader={self.async_uploader!r} is invalid: use one of {ASYNC_UPLOADERS}"
            )
        for name in ("async_checkpointing", "clean_same_step_last", "read_once_per_node"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: it must be True or False")
