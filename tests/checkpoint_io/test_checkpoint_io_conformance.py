"""S3CheckpointIO behaves as Lightning's ``CheckpointIO`` contract (and ``TorchCheckpointIO``) does.

Against the real S3 server, and a real two-process ``Trainer.fit`` where the contract involves one.
"""

from __future__ import annotations

import pickle
from typing import Any

from checkpoint_io.s3_helpers import state
from s3_checkpoint_io import S3CheckpointIO
from s3_utils import S3ClientConfig

# -- pickling, and ddp_spawn ----------------------------------------------------------------------------


def test_a_pickled_copy_keeps_the_settings_and_starts_fresh(s3_server: Any, bucket: str) -> None:
    config = S3ClientConfig(
        endpoint_url=s3_server.endpoint_url,
        region="us-east-1",
        access_key_id="testing-access-key",
        secret_access_key="testing-secret-key-never-logged",
        read_timeout=7.0,
    )
    io = S3CheckpointIO(
        f"s3://{bucket}/run",
        chunk_size_MB=6,
        max_read_concurrency=3,
        max_write_concurrency=2,
        async_checkpointing=True,
        client_config=config,
        async_uploader="thread",
        max_pending_saves=2,
        history_size=5,
    )
    try:
        io.save_checkpoint(state(1), f"s3://{bucket}/run/a.ckpt")
        io.wait_for_saves()  # the original now holds clients, a worker thread and a history

        copy = pickle.loads(pickle.dumps(io))
        try:
            assert copy.dirpath == io.dirpath
            assert copy.settings == io.settings
            assert copy.client_config == config
            assert copy._write_transfer == io._write_transfer
            assert copy._read_transfer == io._read_transfer
            assert copy.save_history == ()
            assert copy.pending_saves == []
            assert "testing-secret-key-never-logged" not in repr(copy)

            copy.save_checkpoint(state(2), f"s3://{bucket}/run/b.ckpt")
            copy.wait_for_saves()
            assert copy.load_checkpoint(f"s3://{bucket}/run/a.ckpt")["global_step"] == 1
            assert [s.sequence for s in copy.save_history] == [1]
            assert [s.path.rsplit("/", 1)[-1] for s in io.save_history] == ["a.ckpt"]  # its own
        finally:
            copy.teardown()
    finally:
        io.teardown()
