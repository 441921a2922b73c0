"""S3Utils keeps NeMo's static helper names working on top of S3Store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from s3_utils import S3ConfigError, S3Utils
from support.s3_server import MotoServer


def test_s3utils_round_trips_and_lists(s3_server: MotoServer, bucket: str, tmp_path: Path) -> None:
    base = f"s3://{bucket}/exp/checkpoints"
    S3Utils.upload_file_stream_to_s3(io.BytesIO(b"weights"), f"{base}/m--step=3-last.ckpt", chunk_size_MB=5)
    local = tmp_path / "f.ckpt"
    local.write_bytes(b"file-weights")
    S3Utils.upload_file(str(local), f"{base}/m--step=4-last.ckpt", remove_file=True)
    assert not local.exists()

    assert S3Utils.s3_path_exists(f"{base}/m--step=3-last.ckpt")
    assert not S3Utils.s3_path_exists(f"{base}")
    assert S3Utils.s3_path_exists(f"{base}", match_directory=True)
    assert S3Utils.download_s3_file_to_stream(f"{base}/m--step=3-last.ckpt").read() == b"weights"
    S3Utils.download_s3_file_to_path(f"{base}/m--step=4-last.ckpt", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"file-weights"

    assert sorted(S3Utils.find_files_with_suffix(base, suffix="last.ckpt")) == [
        "exp/checkpoints/m--step=3-last.ckpt",
        "exp/checkpoints/m--step=4-last.ckpt",
    ]
    assert S3Utils.find_files_with_suffix(base, suffix=".nemo") == []
    urls = S3Utils.find_files_with_suffix(base, return_key_only=False)
    assert all(u.startswith(f"s3://{bucket}/exp/") for u in urls)

    S3Utils.remove_object(f"{base}/m--step=3-last.ckpt")
    assert not S3Utils.s3_path_exists(f"{base}/m--step=3-last.ckpt")


def test_s3utils_url_helpers() -> None:
    assert S3Utils.parse_s3_url("s3://bucket/a/b") == ("bucket", "a/b")
    assert S3Utils.build_s3_url("bucket", "a/b") == "s3://bucket/a/b"
    assert S3Utils.is_s3_url("s3://bucket/a")
    assert not S3Utils.is_s3_url("/tmp/a")
    assert S3Utils.parse_prefix_with_step("s3://b/m--step=7-last.ckpt") == "s3://b/m--step=7-"
    with pytest.raises(S3ConfigError, match="Bad_Bucket"):
        S3Utils.parse_s3_url("s3://Bad_Bucket/key")
