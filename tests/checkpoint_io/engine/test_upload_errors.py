"""A save that fails in S3 raises the S3 error, not torch's zip-writer error that followed it."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from checkpoint_io.s3_helpers import keys
from s3_checkpoint_io import S3CheckpointIO
from s3_utils import S3AccessDeniedError
from support.fault_proxy import FaultProxy


def big_state() -> dict[str, Any]:
    """About 24 MiB of tensors: five 5 MiB parts, so create, parts and completion all happen."""
    generator = torch.Generator().manual_seed(0)
    return {"state_dict": {f"w{i}": torch.randn(256, 1024, generator=generator) for i in range(24)}}


@pytest.mark.parametrize("operation", ["CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"])
def test_access_denied_during_a_save_raises_the_s3_error_not_torchs(
    s3_server: Any, bucket: str, s3_client: Any, operation: str
) -> None:
    with FaultProxy(s3_server.endpoint_url) as proxy:
        io = S3CheckpointIO(f"s3://{bucket}/run", chunk_size_MB=5, endpoint_url=proxy.url)
        try:
            proxy.add_fault(operation, "access_denied")
            with pytest.raises(PermissionError, match=rf"{operation} .*step=1.ckpt.*access denied") as caught:
                io.save_checkpoint(big_state(), f"s3://{bucket}/run/step=1.ckpt")
            assert isinstance(caught.value, S3AccessDeniedError)
            assert caught.value.operation == operation
            assert caught.value.status == 403
            assert caught.value.code == "AccessDenied"
            assert proxy.injected >= 1
        finally:
            io.teardown()
    assert keys(s3_client, bucket) == set()
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
