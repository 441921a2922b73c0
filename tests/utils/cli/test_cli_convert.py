"""``s3ckpt convert`` and ``ls --tensors`` without torch: sizes, usage errors, and the install hint."""

from __future__ import annotations

from typing import Any

import pytest

from s3_utils.cli import exit_codes
from s3_utils.cli.console import UsageError
from s3_utils.cli.convert import parse_size
from support.cli import s3ckpt


@pytest.mark.parametrize(
    ("text", "size"), [("5GB", 5 * 10**9), ("200MiB", 200 * 2**20), ("4096", 4096), ("1.5kb", 1500)]
)
def test_max_shard_size_reads_decimal_and_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1GB", "five", "5XB"])
def test_a_bad_max_shard_size_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="give a positive size"):
        parse_size(text)


def test_convert_without_the_plugin_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, s3_client: Any, bucket: str
) -> None:
    monkeypatch.setattr("s3_utils.cli.convert.load_plugins", list)
    result = s3ckpt("convert", f"s3://{bucket}/ckpt", f"s3://{bucket}/hf", "--to", "safetensors")
    assert result.code == exit_codes.USAGE
    assert "pip install s3-checkpoint-io" in result.err


def test_convert_to_torch_refuses_safetensors_options(s3_client: Any, bucket: str) -> None:
    result = s3ckpt("convert", f"s3://{bucket}/ckpt", "/tmp/x.pt", "--to", "torch", "--dtype", "bf16")
    assert result.code == exit_codes.USAGE
    assert "apply to --to safetensors only" in result.err


def test_ls_tensors_without_the_plugin_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, s3_client: Any, bucket: str
) -> None:
    monkeypatch.setattr("s3_utils.cli.tensors.load_plugins", list)
    s3_client.put_object(Bucket=bucket, Key="run/last.ckpt", Body=b"PK\x03\x04 not really")
    result = s3ckpt("ls", "--tensors", f"s3://{bucket}/run/last.ckpt")
    assert result.code == exit_codes.USAGE
    assert "pip install s3-checkpoint-io" in result.err


def test_ls_tensors_of_nothing_is_not_found(s3_client: Any, bucket: str) -> None:
    result = s3ckpt("ls", "--tensors", f"s3://{bucket}/run/missing.ckpt")
    assert result.code == exit_codes.NOT_FOUND
    assert "no checkpoint at" in result.err
