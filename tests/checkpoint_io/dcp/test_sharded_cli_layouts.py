"""``s3ckpt cp``, ``verify`` and ``cleanup`` on every layout of sharded checkpoint: ours flat and
rank-hash (shards in ``<hh>/`` sub-folders), and torch's stock folders (``FileSystemWriter``)."""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import time
from typing import Any

import pytest
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

from checkpoint_io.dcp.dcp_rank_targets import plain_state
from checkpoint_io.dcp.interop_targets import assert_same_state, load_in_one_process, upload_folder
from s3_checkpoint_io.dcp import S3StorageReader, S3StorageWriter
from s3_utils.cli import exit_codes, sharded
from support.cli import s3ckpt
from support.fault_proxy import FaultProxy
from support.s3_objects import object_keys

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _lines(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(start)]


def _save_rank_hash(url: str, version: int = 1) -> str:
    """Save in one process with rank-hash keys; returns the shard's name under the prefix (``70/__...``)."""
    writer = S3StorageWriter(url, chunk_size_MB=5, key_prefix_strategy="rank-hash")
    dcp.save(plain_state(version), storage_writer=writer)
    (name,) = _shard_names(url)
    return name


def _shard_names(url: str) -> tuple[str, ...]:
    reader = S3StorageReader(url)
    reader.read_metadata()
    return reader.commit.shard_names


def _stock_folder(tmp_path: pathlib.Path, version: int = 1) -> pathlib.Path:
    folder = tmp_path / "stock"
    dcp.save(plain_state(version), storage_writer=FileSystemWriter(folder, thread_count=2))
    assert len([name for name in _files(folder) if name.endswith(".distcp")]) == 2
    return folder


def test_cp_of_a_rank_hash_checkpoint_copies_its_sub_folders_down_and_back_up(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    url = f"s3://{bucket}/run/step-1"
    shard = _save_rank_hash(url)
    assert "/" in shard  # <hh>/__<save>_0_<token>.distcp

    down = s3ckpt("cp", url, f"{tmp_path}/")
    assert down.code == exit_codes.OK, down.err
    folder = tmp_path / "step-1"
    assert _files(folder) == sorted([".metadata", shard])
    assert_same_state(load_in_one_process(FileSystemReader(folder), 1), plain_state(1))

    copy = f"s3://{bucket}/copy/step-1"
    up = s3ckpt("cp", str(folder), copy)
    assert up.code == exit_codes.OK, up.err
    assert object_keys(s3_client, bucket, "copy/") == sorted(
        ["copy/step-1/.metadata", f"copy/step-1/{shard}"]
    )
    assert_same_state(load_in_one_process(S3StorageReader(copy), 1), plain_state(1))


def test_verify_of_a_rank_hash_checkpoint_checks_the_shards_in_sub_folders(
    s3_client: Any, bucket: str
) -> None:
    url = f"s3://{bucket}/run/step-1"
    shard = _save_rank_hash(url)

    good = s3ckpt("verify", url)
    assert good.code == exit_codes.OK, good.out + good.err
    assert any(line.split()[1:3] == ["ok", f"{shard}:"] for line in _lines(good.out, "size")), good.out

    key = f"run/step-1/{shard}"
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=key, Body=body[:-64])
    short = s3ckpt("verify", url)
    assert short.code == exit_codes.CHECK_FAILED
    (references,) = _lines(short.out, "references")
    assert "FAILED" in references
    assert f"shorter than referenced ['{shard}']" in references


def test_verify_says_which_writers_layout_a_checkpoint_is(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    ours = f"s3://{bucket}/run/ours"
    dcp.save(plain_state(1), storage_writer=S3StorageWriter(ours))
    save_id = S3StorageReader(ours).read_metadata().storage_meta.save_id
    stock = f"s3://{bucket}/run/stock"
    upload_folder(s3_client, _stock_folder(tmp_path), bucket, "run/stock")

    ours_result = s3ckpt("verify", ours)
    assert ours_result.code == exit_codes.OK, ours_result.out
    assert _lines(ours_result.out, "layout") == [f"layout     ok       s3-checkpoint-io, save {save_id}"]
    stock_result = s3ckpt("verify", stock)
    assert stock_result.code == exit_codes.OK, stock_result.out
    assert _lines(stock_result.out, "layout") == ["layout     ok       torch DCP (stock)"]
    assert len(_lines(stock_result.out, "size")) == 3  # the commit and both shards


def test_cp_up_of_a_stock_folder_uploads_every_shard_before_the_commit(
    bucket: str, fault_proxy: FaultProxy, tmp_path: pathlib.Path
) -> None:
    folder = _stock_folder(tmp_path, version=2)
    url = f"s3://{bucket}/run/step-2"

    up = s3ckpt("--endpoint-url", fault_proxy.url, "cp", str(folder), url)

    assert up.code == exit_codes.OK, up.err
    writes = [
        r.path for r in fault_proxy.requests if r.method in ("PUT", "POST") and "/run/step-2/" in r.path
    ]
    written = [path.split("?")[0].rsplit("/", 1)[1] for path in writes]
    assert written[-1] == ".metadata", written
    assert set(written[:-1]) == {name for name in _files(folder) if name.endswith(".distcp")}
    assert_same_state(load_in_one_process(S3StorageReader(url), 2), plain_state(2))


def test_cp_up_refuses_a_folder_missing_a_shard_its_metadata_references_and_uploads_nothing(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    folder = _stock_folder(tmp_path)
    lost = next(name for name in _files(folder) if name.endswith(".distcp"))
    (folder / lost).unlink()

    up = s3ckpt("cp", str(folder), f"s3://{bucket}/run/step-1")

    assert up.code == exit_codes.NOT_FOUND
    assert "is not a whole checkpoint" in up.err
    assert lost in up.err
    assert "nothing uploaded" in up.err
    assert object_keys(s3_client, bucket, "") == []


def test_cp_down_refuses_a_commit_naming_a_path_outside_the_checkpoint(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path
) -> None:
    folder = _stock_folder(tmp_path)
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    metadata.storage_data = {
        index: dataclasses.replace(info, relative_path=f"../../{info.relative_path}")
        for index, info in metadata.storage_data.items()
    }
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    upload_folder(s3_client, folder, bucket, "run/hostile")
    target = tmp_path / "deep" / "down"
    target.mkdir(parents=True)

    down = s3ckpt("cp", f"s3://{bucket}/run/hostile", f"{target}/")

    assert down.code == exit_codes.USAGE
    assert "not a path inside the checkpoint" in down.err
    assert list(target.iterdir()) == []
    assert not any(path.suffix == ".distcp" for path in tmp_path.iterdir())


def test_cp_down_without_the_plugin_copies_every_object_under_the_prefix(
    s3_client: Any, bucket: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{bucket}/run/step-1"
    shard = _save_rank_hash(url)
    stray = shard.split("/")[0] + "/__0123456789abcdef0123456789abcdef_1_0badf00d.distcp"
    s3_client.put_object(Bucket=bucket, Key=f"run/step-1/{stray}", Body=b"stray")
    monkeypatch.setattr(sharded, "load_plugins", list)  # as with s3-utils alone: no plugin to read commits

    down = s3ckpt("cp", url, f"{tmp_path}/")

    assert down.code == exit_codes.OK, down.err
    assert _files(tmp_path / "step-1") == sorted([".metadata", shard, stray])


def test_cleanup_keeps_the_shards_of_a_committed_rank_hash_checkpoint(s3_client: Any, bucket: str) -> None:
    url = f"s3://{bucket}/run/step-1"
    shard = _save_rank_hash(url)
    stray = shard.split("/")[0] + "/__0123456789abcdef0123456789abcdef_1_0badf00d.distcp"
    s3_client.put_object(Bucket=bucket, Key=f"run/step-1/{stray}", Body=b"stray")
    time.sleep(1.2)

    result = s3ckpt("cleanup", f"s3://{bucket}/run/", "--older-than", "1s")

    assert result.code == exit_codes.OK, result.err
    assert "removed 1 unreferenced shard objects" in result.out
    assert object_keys(s3_client, bucket, "run/") == sorted(["run/step-1/.metadata", f"run/step-1/{shard}"])
    assert_same_state(load_in_one_process(S3StorageReader(url), 1), plain_state(1))
