"""The plugin's settings and s3_utils' TransferConfig check chunk_size_MB with one rule, one message."""

from __future__ import annotations

import pytest

from s3_checkpoint_io.lightning.settings import CheckpointIOSettings
from s3_utils import TransferConfig


@pytest.mark.parametrize("size", [4, 5121, True, "64"])
def test_both_config_classes_give_the_same_error(size: object) -> None:
    with pytest.raises(ValueError, match="chunk_size_MB=") as transfer:
        TransferConfig(chunk_size_MB=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size_MB=") as plugin:
        CheckpointIOSettings(chunk_size_MB=size)  # type: ignore[arg-type]
    assert str(transfer.value) == str(plugin.value)
