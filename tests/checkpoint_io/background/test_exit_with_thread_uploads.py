"""A pending save uploaded by a thread of the trainer (not the helper process) still lands at exit.

This is why the ordered-saves engine waits in an exit hook that runs before ``concurrent.futures``
refuses new work (:mod:`s3_checkpoint_io.background.before_exit`): with ``atexit`` the part uploads
of a multipart save still running at exit are refused and the save is lost.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from checkpoint_io.background.lifecycle_targets import multipart_state
from checkpoint_io.background.test_async_lifecycle import load_exactly, run_script
from checkpoint_io.s3_helpers import keys
from s3_checkpoint_io import S3CheckpointIO


def thread_upload_as_last_statement(url: str) -> None:
    """The script: queue an asynchronous multipart save uploaded from a thread, and end at once."""
    io = S3CheckpointIO(
        url.rsplit("/", 1)[0], chunk_size_MB=5, async_checkpointing=True, async_uploader="thread"
    )
    io.save_checkpoint(multipart_state(), url)


@pytest.mark.slow
def test_a_thread_uploaded_save_as_the_last_statement_of_a_script_completes_before_exit(
    s3_server: Any, bucket: str, s3_client: Any
) -> None:
    url = f"s3://{bucket}/run/final.ckpt"
    run_script(thread_upload_as_last_statement, url)
    assert keys(s3_client, bucket) == {"run/final.ckpt"}
    assert torch.equal(load_exactly(url)["w"], multipart_state()["w"])
