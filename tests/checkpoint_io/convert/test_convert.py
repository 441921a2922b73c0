"""Converting checkpoints to safetensors and torch.save, read back by the safetensors library and torch."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from safetensors.torch import load_file

from checkpoint_io.convert import convert_rank_targets
from checkpoint_io.convert.convert_rank_targets import full_state
from s3_checkpoint_io.convert import (
    DestinationExistsError,
    IncompleteCheckpointError,
    Selection,
    SelectionError,
    SourceNotFoundError,
    to_safetensors,
    to_torch_save,
)
from s3_checkpoint_io.dcp import S3StorageWriter
from s3_checkpoint_io.errors import CorruptCheckpointError, WeightsOnlyLoadError
from s3_utils import S3Store
from support.ranks import launch
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _flat(state: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flat(value, name))
    return out


def _download(s3_client: Any, bucket: str, key: str, path: pathlib.Path) -> pathlib.Path:
    s3_client.download_file(bucket, key, str(path))
    return path


def _assert_same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


@pytest.fixture(scope="module")
def sharded_url(s3_server: Any) -> str:
    """A checkpoint saved on 2 gloo ranks (DTensors sharded by rows and by columns), kept for the module."""
    client = s3_server.client()
    client.create_bucket(Bucket="convert-sharded")
    url = "s3://convert-sharded/run/step-3"
    launch(convert_rank_targets.save, world_size=2, args=[url], timeout_s=120)
    return url


def test_two_rank_sharded_checkpoint_converts_to_one_safetensors_file_locally(
    sharded_url: str, store: S3Store, tmp_path: pathlib.Path
) -> None:
    result = to_safetensors(sharded_url, str(tmp_path / "out"), store=store)

    assert [pathlib.Path(path).name for path, _ in result.files] == ["model.safetensors"]
    _assert_same(load_file(tmp_path / "out" / "model.safetensors"), _flat(full_state()))
    with safe_open(tmp_path / "out" / "model.safetensors", framework="pt") as file:
        assert file.metadata() == {"format": "pt"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]


def test_two_rank_sharded_checkpoint_converts_to_s3_files_split_by_size_with_a_correct_index(
    sharded_url: str, store: S3Store, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    expected = _flat(full_state())
    result = to_safetensors(sharded_url, f"s3://{bucket}/hf", store=store, max_file_bytes=200)

    keys = sorted(object_keys(s3_client, bucket, "hf/"))
    count = len(keys) - 1
    assert count > 1
    assert keys[-1] == "hf/model.safetensors.index.json"
    assert keys[:-1] == [f"hf/model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]
    index = json.loads(s3_client.get_object(Bucket=bucket, Key=keys[-1])["Body"].read())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())
    assert sorted(index["weight_map"]) == sorted(expected)
    got: dict[str, torch.Tensor] = {}
    for key in keys[:-1]:
        file_name = key.removeprefix("hf/")
        loaded = load_file(_download(s3_client, bucket, key, tmp_path / file_name))
        assert all(index["weight_map"][name] == file_name for name in loaded)
        got.update(loaded)
    _assert_same(got, expected)
    assert result.bytes == sum(s3_client.head_object(Bucket=bucket, Key=k)["ContentLength"] for k in keys)


def test_key_filter_strips_the_prefix_and_casts_floats_only(
    sharded_url: str, store: S3Store, tmp_path: pathlib.Path
) -> None:
    selection = Selection(include=("state_dict.",), strip_prefix="state_dict.", dtype=torch.float16)
    to_safetensors(sharded_url, str(tmp_path), store=store, selection=selection)

    got = load_file(tmp_path / "model.safetensors")
    model = full_state()["state_dict"]
    assert sorted(got) == sorted(model)
    for name, tensor in model.items():
        wanted = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        assert got[name].dtype == wanted.dtype, name
        assert torch.equal(got[name], wanted), name


def test_sharded_checkpoint_converts_to_one_torch_save_file_equal_to_the_saved_state(
    sharded_url: str, store: S3Store, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    to_torch_save(sharded_url, f"s3://{bucket}/export/model.pt", store=store)

    loaded = torch.load(
        _download(s3_client, bucket, "export/model.pt", tmp_path / "model.pt"), weights_only=True
    )
    expected = full_state()
    assert loaded.keys() == expected.keys()
    assert loaded["step"] == 3
    _assert_same(_flat(loaded), _flat(expected))


def test_stock_filesystem_writer_checkpoint_uploaded_to_s3_converts(
    store: S3Store, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    state = {"model": {"w": torch.randn(16, 8), "b": torch.arange(8, dtype=torch.int32)}, "epoch": 1}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp_path / "stock"))
    for path in (tmp_path / "stock").iterdir():
        s3_client.upload_file(str(path), bucket, f"stock/{path.name}")

    to_safetensors(f"s3://{bucket}/stock", str(tmp_path / "hf"), store=store)
    to_torch_save(f"s3://{bucket}/stock", str(tmp_path / "stock.pt"), store=store)

    _assert_same(load_file(tmp_path / "hf" / "model.safetensors"), _flat(state))
    loaded = torch.load(tmp_path / "stock.pt", weights_only=True)
    assert loaded["epoch"] == 1
    _assert_same(_flat(loaded), _flat(state))


def test_single_file_checkpoint_converts_with_nested_keys_flattened(
    store: S3Store, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    checkpoint = {
        "state_dict": {"encoder.weight": torch.randn(4, 4), "blocks": [torch.ones(2), torch.zeros(3)]},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(4, 4)}}}],
        "global_step": 5,
    }
    torch.save(checkpoint, tmp_path / "last.ckpt")
    s3_client.upload_file(str(tmp_path / "last.ckpt"), bucket, "run/last.ckpt")

    to_safetensors(
        f"s3://{bucket}/run/last.ckpt",
        f"s3://{bucket}/hf",
        store=store,
        selection=Selection(include=("state_dict.",), strip_prefix="state_dict."),
    )

    got = load_file(_download(s3_client, bucket, "hf/model.safetensors", tmp_path / "model.safetensors"))
    _assert_same(
        got,
        {
            "encoder.weight": checkpoint["state_dict"]["encoder.weight"],
            "blocks.0": torch.ones(2),
            "blocks.1": torch.zeros(3),
        },
    )


def test_a_prefix_without_a_checkpoint_is_refused(store: S3Store, s3_client: Any, bucket: str) -> None:
    with pytest.raises(SourceNotFoundError, match="nothing to convert"):
        to_safetensors(f"s3://{bucket}/nothing", f"s3://{bucket}/hf", store=store)
    s3_client.put_object(Bucket=bucket, Key="notes.txt", Body=b"hello, not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="is not a checkpoint"):
        to_safetensors(f"s3://{bucket}/notes.txt", f"s3://{bucket}/hf", store=store)
    assert object_keys(s3_client, bucket, "hf/") == []


def test_a_stock_checkpoint_with_a_missing_shard_is_refused_before_anything_is_written(
    store: S3Store, s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=dcp.FileSystemWriter(tmp_path / "stock"))
    uploaded = [p for p in (tmp_path / "stock").iterdir() if not p.name.endswith(".distcp")]
    for path in uploaded:
        s3_client.upload_file(str(path), bucket, f"stock/{path.name}")

    with pytest.raises(IncompleteCheckpointError, match=r"missing or short: .*\.distcp \(missing\)"):
        to_safetensors(f"s3://{bucket}/stock", f"s3://{bucket}/hf", store=store)
    assert object_keys(s3_client, bucket, "hf/") == []


def test_an_existing_destination_is_refused_unless_overwrite(
    store: S3Store, tmp_path: pathlib.Path, bucket: str
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    to_safetensors(url, str(tmp_path), store=store)
    (tmp_path / "model.safetensors.index.json").write_text("{}")

    with pytest.raises(DestinationExistsError, match=r"already holds model\.safetensors, model\.safetensors"):
        to_safetensors(url, str(tmp_path), store=store)
    to_torch_save(url, str(tmp_path / "x.pt"), store=store)
    with pytest.raises(DestinationExistsError, match=r"x\.pt exists"):
        to_torch_save(url, str(tmp_path / "x.pt"), store=store)

    dcp.save({"w": torch.full((4,), 2.0)}, storage_writer=S3StorageWriter(url, chunk_size_MB=5))
    to_safetensors(url, str(tmp_path), store=store, overwrite=True)
    assert torch.equal(load_file(tmp_path / "model.safetensors")["w"], torch.full((4,), 2.0))
    assert not (tmp_path / "model.safetensors.index.json").exists()  # a stale index would contradict it


def test_a_key_filter_matching_nothing_and_an_unsupported_dtype_are_refused(
    store: S3Store, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save(
        {"model": {"w": torch.ones(2)}, "z": torch.ones(2, dtype=torch.complex64)},
        storage_writer=S3StorageWriter(url, chunk_size_MB=5),
    )
    with pytest.raises(SelectionError, match=r"no tensor .* starting with 'state_dict\.'.*model\.w"):
        to_safetensors(url, str(tmp_path), store=store, selection=Selection(include=("state_dict.",)))
    with pytest.raises(SelectionError, match=r"'z' .* is torch\.complex64, which safetensors cannot store"):
        to_safetensors(url, str(tmp_path), store=store)
    assert list(tmp_path.iterdir()) == []
    to_safetensors(url, str(tmp_path), store=store, selection=Selection(include=("model.",)))
    assert sorted(load_file(tmp_path / "model.safetensors")) == ["model.w"]


class Opaque:
    """A byte item weights_only loading refuses."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_torch_save_of_pickled_objects_needs_trust(
    store: S3Store, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/ckpt"
    dcp.save({"w": torch.ones(2), "extra": Opaque(7)}, storage_writer=S3StorageWriter(url, chunk_size_MB=5))

    with pytest.raises(WeightsOnlyLoadError, match=r"'extra' is a pickled Python object .* --trust"):
        to_torch_save(url, str(tmp_path / "x.pt"), store=store)
    assert not (tmp_path / "x.pt").exists()
    to_torch_save(url, str(tmp_path / "x.pt"), store=store, trust=True)
    assert torch.load(tmp_path / "x.pt", weights_only=False)["extra"].value == 7
