"""Sharded checkpoints move between our DCP storage and every other DCP tool, both ways.

Real components only: ranks are gloo CPU processes saving a ``DTensor`` sharded over 2 ranks, torch's
``FileSystemWriter``/``FileSystemReader`` and ``dcp_to_torch_save`` on local folders, ``s3ckpt cp`` between
those folders and the test server, torch's ``FsspecWriter`` over s3fs and s3torchconnector's DCP classes
against the same server. Loads run on another number of ranks (3, or one process) so DCP reshards.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from checkpoint_io.dcp import interop_targets
from checkpoint_io.dcp.dcp_rank_targets import plain_state
from checkpoint_io.dcp.interop_targets import assert_same_state, load_in_one_process, upload_folder
from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_checkpoint_io.errors import CheckpointExistsError, CorruptCheckpointError
from s3_utils.cli import exit_codes
from support.cli import s3ckpt
from support.ranks import launch
from support.s3_objects import object_keys
from support.s3_server import MotoServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "dcp_format1"
SAVE = interop_targets.save
LOAD = interop_targets.load


def _save_on_two_ranks(kind: str, location: str, version: int, endpoint: str) -> None:
    launch(SAVE, world_size=2, args=[kind, location, str(version), endpoint], timeout_s=150)


def _assert_loads_on_three_ranks(
    kind: str, location: str, version: int, endpoint: str, out: pathlib.Path
) -> None:
    out.mkdir()
    launch(LOAD, world_size=3, args=[kind, location, str(version), str(out), endpoint], timeout_s=150)
    for rank in range(3):
        checks = json.loads((out / f"rank{rank}.json").read_text())
        assert checks == {"sharded": True, "replicated": True, "own": True, "step": True}, rank


def _shard_keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    return [key for key in object_keys(s3_client, bucket, prefix) if key.endswith(".distcp")]


# -- ours -> torch, s3torchconnector ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ours", "ours-rank-hash"])
def test_ours_from_two_ranks_copied_down_loads_with_torchs_filesystem_reader_and_converts_to_torch_save(
    s3_server: MotoServer, s3_client: Any, bucket: str, tmp_path: pathlib.Path, kind: str
) -> None:
    url = f"s3://{bucket}/run/step-1"
    _save_on_two_ranks(kind, url, 1, s3_server.endpoint_url)
    shards = _shard_keys(s3_client, bucket, "run/step-1/")
    assert len(shards) == 2
    nested = kind == "ours-rank-hash"
    assert all((key.count("/") == 3) is nested for key in shards), shards  # <hh>/ under the prefix

    down = s3ckpt("cp", url, f"{tmp_path}/")
    assert down.code == exit_codes.OK, down.err
    folder = tmp_path / "step-1"
    copied = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    assert copied == sorted([".metadata", *(key.removeprefix("run/step-1/") for key in shards)])

    assert_same_state(load_in_one_process(FileSystemReader(folder), 1), plain_state(1))
    dcp_to_torch_save(folder, tmp_path / "whole.pt")
    assert_same_state(torch.load(tmp_path / "whole.pt", weights_only=True), plain_state(1))


@pytest.mark.parametrize("kind", ["ours", "ours-rank-hash"])
def test_ours_from_two_ranks_loads_with_s3torchconnectors_reader(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path, kind: str
) -> None:
    pytest.importorskip("s3torchconnector", reason="s3torchconnector is installed only in some nox sessions")
    from checkpoint_io.dcp.interop_targets import reader

    url = f"s3://{bucket}/run/step-3"
    _save_on_two_ranks(kind, url, 3, s3_server.endpoint_url)
    if kind == "ours":
        _assert_loads_on_three_ranks("s3torch", url, 3, s3_server.endpoint_url, tmp_path / "out")
    else:
        assert_same_state(
            load_in_one_process(reader("s3torch", url, s3_server.endpoint_url), 3), plain_state(3)
        )


def test_our_metadata_unpickles_with_torch_alone(s3_client: Any, bucket: str, tmp_path: pathlib.Path) -> None:
    url = f"s3://{bucket}/run/alone"
    dcp.save(plain_state(4), storage_writer=S3StorageWriter(url))
    commit = tmp_path / "metadata"
    commit.write_bytes(s3_client.get_object(Bucket=bucket, Key="run/alone/.metadata")["Body"].read())
    probe = (
        "import pickle, sys\n"
        "sys.modules['s3_checkpoint_io'] = None  # importing it now raises ImportError\n"
        "from torch.distributed.checkpoint.filesystem import _StorageInfo\n"
        "from torch.distributed.checkpoint.metadata import Metadata\n"
        "metadata = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "assert isinstance(metadata, Metadata), type(metadata)\n"
        "assert all(isinstance(info, _StorageInfo) for info in metadata.storage_data.values())\n"
        "extra = metadata.storage_meta.s3_checkpoint_io\n"
        "assert type(extra) is dict and extra['format'] == 2, extra\n"
        "print(metadata.storage_meta.save_id, sorted(metadata.state_dict_metadata))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(commit)], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    save_id, keys = done.stdout.split(" ", 1)
    (shard,) = _shard_keys(s3_client, bucket, "run/alone/")
    assert save_id in shard  # the save id torch sees is the one in our shard names
    assert "'rank0.own'" in keys


# -- torch, fsspec, s3torchconnector -> ours --------------------------------------------------------


def test_torchs_filesystem_checkpoint_copied_up_loads_with_our_reader_on_three_ranks(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "step-2"
    _save_on_two_ranks("torch", str(folder), 2, s3_server.endpoint_url)
    url = f"s3://{bucket}/run/step-2"

    up = s3ckpt("cp", str(folder), url)
    assert up.code == exit_codes.OK, up.err

    _assert_loads_on_three_ranks("ours", url, 2, s3_server.endpoint_url, tmp_path / "out")
    assert_same_state(load_in_one_process(S3StorageReader(url), 2), plain_state(2))


def test_s3torchconnector_checkpoint_from_two_ranks_loads_with_our_reader_on_three_ranks(
    s3_server: MotoServer, bucket: str, tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("s3torchconnector", reason="s3torchconnector is installed only in some nox sessions")
    url = f"s3://{bucket}/run/step-5"
    _save_on_two_ranks("s3torch", url, 5, s3_server.endpoint_url)
    _assert_loads_on_three_ranks("ours", url, 5, s3_server.endpoint_url, tmp_path / "out")


def test_fsspec_checkpoint_over_s3fs_from_two_ranks_loads_with_our_reader(
    s3_server: MotoServer, s3_client: Any, bucket: str
) -> None:
    url = f"s3://{bucket}/run/step-6"
    _save_on_two_ranks("fsspec", url, 6, s3_server.endpoint_url)
    assert len(_shard_keys(s3_client, bucket, "run/step-6/")) == 2
    reader = S3StorageReader(url)
    assert_same_state(load_in_one_process(reader, 6), plain_state(6))
    assert reader.commit.kind == "torch DCP"


def _format1_template() -> dict[str, Any]:
    expected = torch.load(DATA / "expected.pt", weights_only=True)
    template = {"model": {key: torch.zeros_like(value) for key, value in expected["model"].items()}}
    template.update(step=0, extra={"lr": 0.0, "name": ""})
    return template


@pytest.mark.parametrize("layout", ["flat", "rank-hash"])
def test_first_release_checkpoints_uploaded_object_by_object_still_load(
    s3_client: Any, bucket: str, layout: str
) -> None:
    keys = upload_folder(s3_client, DATA / layout, bucket, f"old/{layout}")
    assert keys[-1].endswith("/.metadata")
    restored = _format1_template()
    reader = S3StorageReader(f"s3://{bucket}/old/{layout}")
    dcp.load(restored, storage_reader=reader)
    assert_same_state(restored, torch.load(DATA / "expected.pt", weights_only=True))
    assert reader.commit.kind == "s3-checkpoint-io (format 1)"


# -- bad inputs -------------------------------------------------------------------------------------


def _only_failure(caught: pytest.ExceptionInfo[CheckpointException]) -> BaseException:
    """The one exception inside DCP's ``CheckpointException`` (torch keeps ``(exception, traceback)``)."""
    (failure,) = caught.value.failures.values()
    return failure[0] if isinstance(failure, tuple) else failure


def _load_error(url: str) -> BaseException:
    with pytest.raises(CheckpointException) as caught:
        load_in_one_process(S3StorageReader(url), 1)
    return _only_failure(caught)


def test_a_prefix_holding_no_checkpoint_is_refused_saying_so(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="run/not-dcp/model.ckpt", Body=b"a single-file checkpoint")
    error = _load_error(f"s3://{bucket}/run/not-dcp")
    # torch 2.13 re-raises a failed metadata read as an AssertionError carrying its message only
    assert f"no committed checkpoint at s3://{bucket}/run/not-dcp" in str(error)
    assert "a save that did not finish commits nothing" in str(error)


def test_a_stock_checkpoint_missing_a_shard_fails_naming_the_missing_object(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "stock"
    dcp.save(plain_state(1), storage_writer=FileSystemWriter(folder, thread_count=2))
    keys = upload_folder(s3_client, folder, bucket, "run/stock")
    shards = [key for key in keys if key.endswith(".distcp")]
    assert len(shards) == 2  # thread_count=2: one file per thread
    s3_client.delete_object(Bucket=bucket, Key=shards[0])

    error = _load_error(f"s3://{bucket}/run/stock")
    assert isinstance(error, FileNotFoundError)
    assert shards[0] in str(error)


def test_a_metadata_object_that_is_not_dcp_metadata_is_named_as_such(s3_client: Any, bucket: str) -> None:
    s3_client.put_object(Bucket=bucket, Key="run/odd/.metadata", Body=pickle.dumps({"step": 3}))
    error = _load_error(f"s3://{bucket}/run/odd")
    assert f"s3://{bucket}/run/odd/.metadata is not DCP metadata (it holds a dict)" in str(error)
    with pytest.raises(CorruptCheckpointError, match="is this a sharded checkpoint"):
        S3StorageReader(f"s3://{bucket}/run/odd").read_metadata()  # the class, outside torch's wrapping


def test_overwrite_false_refuses_a_committed_prefix_before_writing_any_shard(
    s3_client: Any, bucket: str
) -> None:
    url = f"s3://{bucket}/run/kept"
    dcp.save(plain_state(1), storage_writer=S3StorageWriter(url))
    before = object_keys(s3_client, bucket, "run/")

    with pytest.raises(CheckpointException) as caught:
        dcp.save(plain_state(2), storage_writer=S3StorageWriter(url, overwrite=False))
    failure = _only_failure(caught)
    assert isinstance(failure, CheckpointExistsError)
    assert "overwrite=False" in str(failure)
    assert object_keys(s3_client, bucket, "run/") == before
    assert_same_state(load_in_one_process(S3StorageReader(url), 1), plain_state(1))

    fresh = f"s3://{bucket}/run/fresh"
    dcp.save(plain_state(2), storage_writer=S3StorageWriter(fresh, overwrite=False))  # nothing there: saves
    assert_same_state(load_in_one_process(S3StorageReader(fresh), 2), plain_state(2))


@pytest.mark.parametrize("storage", [S3StorageWriter, S3StorageReader])
def test_validate_checkpoint_id_takes_only_an_s3_prefix(storage: Any) -> None:
    assert storage.validate_checkpoint_id("s3://bucket/p")
    assert not storage.validate_checkpoint_id("s3:///")
    assert not storage.validate_checkpoint_id("s3://b/p")  # S3 bucket names have 3 to 63 characters
    with pytest.raises(ValueError, match="3 to 63 characters"):  # the constructor agrees, and says why
        storage("s3://b/p")
    assert not storage.validate_checkpoint_id("s3://b")
    assert not storage.validate_checkpoint_id("/local/folder")
