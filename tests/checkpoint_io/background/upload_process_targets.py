"""Scripts the upload-process tests run in a fresh interpreter (via support.ranks.spawn)."""

from __future__ import annotations

import time

from checkpoint_io.background.lifecycle_targets import multipart_state
from s3_checkpoint_io import S3CheckpointIO


def async_save_as_last_statement_reporting_helper(url: str) -> None:
    """Queue an asynchronous multipart save, print the upload process's id, and end the script."""
    io = S3CheckpointIO(url.rsplit("/", 1)[0], chunk_size_MB=5, async_checkpointing=True)
    io.save_checkpoint(multipart_state(), url)
    deadline = time.monotonic() + 60
    while io.upload_process_pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    print(io.upload_process_pid, flush=True)
