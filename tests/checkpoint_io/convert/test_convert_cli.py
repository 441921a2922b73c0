"""``s3ckpt convert`` and ``s3ckpt ls --tensors`` through the CLI's main, with s3-checkpoint-io's plugin."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from s3_checkpoint_io.convert.listing import list_file_tensors
from s3_checkpoint_io.dcp import S3StorageWriter
from s3_utils import S3ClientConfig, S3Store, TransferStats
from s3_utils.cli import exit_codes
from support.cli import s3ckpt
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _model() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"encoder.weight": torch.randn(32, 16, generator=generator), "encoder.bias": torch.zeros(16)}


def _save(url: str) -> None:
    state = {"state_dict": _model(), "optimizer": {"m": torch.ones(32, 16)}, "global_step": 9}
    dcp.save(state, storage_writer=S3StorageWriter(url, chunk_size_MB=5))


def test_convert_writes_safetensors_with_filter_strip_and_cast(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/step-9"
    _save(url)

    result = s3ckpt(
        "convert", url, str(tmp_path), "--to", "safetensors", "--include", "state_dict.",
        "--strip-prefix", "state_dict.", "--dtype", "bf16",
    )  # fmt: skip

    assert result.code == exit_codes.OK, result.err
    assert f"wrote {tmp_path / 'model.safetensors'}" in result.out
    assert "converted" in result.out
    assert "2 tensors" in result.out
    got = load_file(tmp_path / "model.safetensors")
    assert {name: t.dtype for name, t in got.items()} == dict.fromkeys(_model(), torch.bfloat16)
    assert torch.equal(got["encoder.weight"], _model()["encoder.weight"].to(torch.bfloat16))


def test_convert_refusals_exit_with_their_codes_and_write_nothing(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/step-9"
    _save(url)
    dst = f"s3://{bucket}/hf"

    nothing = s3ckpt("convert", f"s3://{bucket}/run/none", dst, "--to", "safetensors")
    no_match = s3ckpt("convert", url, dst, "--to", "safetensors", "--include", "model.")
    bad_dtype = s3ckpt("convert", url, dst, "--to", "safetensors", "--dtype", "int8")
    assert object_keys(s3_client, bucket, "hf/") == []
    assert s3ckpt("convert", url, dst, "--to", "safetensors").code == exit_codes.OK
    exists = s3ckpt("convert", url, dst, "--to", "safetensors")
    shard = next(k for k in object_keys(s3_client, bucket, "run/step-9/") if k.endswith(".distcp"))
    s3_client.delete_object(Bucket=bucket, Key=shard)
    missing = s3ckpt("convert", url, str(tmp_path / "x.pt"), "--to", "torch")

    assert (nothing.code, no_match.code, bad_dtype.code) == (
        exit_codes.NOT_FOUND,
        exit_codes.USAGE,
        exit_codes.USAGE,
    )
    assert "nothing to convert" in nothing.err
    assert "starting with 'model.'" in no_match.err
    assert "not a floating-point torch dtype" in bad_dtype.err
    assert exists.code == exit_codes.USAGE
    assert "--overwrite" in exists.err
    assert missing.code == exit_codes.NOT_FOUND
    assert "is incomplete" in missing.err
    assert not (tmp_path / "x.pt").exists()


def test_convert_to_torch_writes_the_nested_state(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/step-9"
    _save(url)

    result = s3ckpt("convert", url, f"s3://{bucket}/export/full.pt", "--to", "torch")

    assert result.code == exit_codes.OK, result.err
    s3_client.download_file(bucket, "export/full.pt", str(tmp_path / "full.pt"))
    loaded = torch.load(tmp_path / "full.pt", weights_only=True)
    assert loaded["global_step"] == 9
    assert torch.equal(loaded["state_dict"]["encoder.weight"], _model()["encoder.weight"])
    assert torch.equal(loaded["optimizer"]["m"], torch.ones(32, 16))


def test_ls_tensors_lists_a_sharded_checkpoint_from_its_commit(s3_client: Any, bucket: str) -> None:
    url = f"s3://{bucket}/run/step-9"
    _save(url)

    table = s3ckpt("ls", "--tensors", url)
    listed = json.loads(s3ckpt("ls", "--tensors", "--json", url + "/").out)

    assert table.code == exit_codes.OK, table.err
    assert re.search(r"^float32 +\[32, 16\] +2\.0 KiB  state_dict\.encoder\.weight$", table.out, re.MULTILINE)
    assert "3 tensors" in table.out
    assert listed["kind"].startswith("sharded checkpoint")
    assert {t["name"]: (t["dtype"], t["shape"], t["bytes"]) for t in listed["tensors"]} == {
        "optimizer.m": ("float32", [32, 16], 2048),
        "state_dict.encoder.bias": ("float32", [16], 64),
        "state_dict.encoder.weight": ("float32", [32, 16], 2048),
    }


def test_ls_tensors_lists_a_single_file_from_its_zip_directory(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    checkpoint = {
        "state_dict": {"w": torch.nn.Parameter(torch.ones(3, 5, dtype=torch.bfloat16)), "n": torch.arange(4)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3, 5)}}}],
        "hyper_parameters": argparse_namespace(),
        "filler": torch.zeros(2**20),  # 4 MiB of storage that a listing need not download
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    s3_client.upload_file(str(tmp_path / "last.ckpt"), bucket, "run/last.ckpt")

    result = s3ckpt("ls", "--tensors", "--json", f"s3://{bucket}/run/last.ckpt")

    assert result.code == exit_codes.OK, result.err
    listed = json.loads(result.out)
    assert listed["kind"] == "torch.save file"
    assert {t["name"]: (t["dtype"], t["shape"], t["bytes"]) for t in listed["tensors"]} == {
        "filler": ("float32", [2**20], 4 * 2**20),
        "optimizer_states.0.state.0.exp_avg": ("float32", [3, 5], 60),
        "state_dict.n": ("int64", [4], 32),
        "state_dict.w": ("bfloat16", [3, 5], 30),
    }


def test_listing_a_single_file_reads_its_directory_and_pickle_not_its_storages(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    torch.save({"big": torch.zeros(4 * 2**20), "small": torch.ones(2)}, tmp_path / "m.pt")  # 16 MiB
    s3_client.upload_file(str(tmp_path / "m.pt"), bucket, "m.pt")
    downloads: list[TransferStats] = []

    with S3Store(S3ClientConfig.from_env(), subscribers=[downloads.append]) as store:
        listed = list_file_tensors(store, f"s3://{bucket}/m.pt")

    assert [(t.key, t.shape) for t in listed] == [("big", (4 * 2**20,)), ("small", (2,))]
    assert sum(d.bytes for d in downloads) < 2**20
    assert len(downloads) <= 6


def argparse_namespace() -> Any:
    """A pickled object of a class a weights-only load refuses (as Lightning's hparams often are)."""
    import argparse

    return argparse.Namespace(lr=0.1)
