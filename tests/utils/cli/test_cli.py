"""The ``s3ckpt`` subcommands run in-process against the moto server: output, exit codes, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from s3_utils import S3ClientConfig, S3Store, TransferConfig
from s3_utils.cli import exit_codes
from support import payloads
from support.cli import s3ckpt
from support.s3_objects import object_keys

MiB = 1024 * 1024


def put(client: Any, bucket: str, key: str, body: bytes = b"x") -> None:
    client.put_object(Bucket=bucket, Key=key, Body=body)


# -- ls ------------------------------------------------------------------------------------------------


def test_ls_lists_checkpoints_with_step_and_marks_the_resume_choice(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "run/ckpt/model--step=100-last.ckpt", b"a" * 2048)
    put(s3_client, bucket, "run/ckpt/model--step=200-last.ckpt", b"b" * 10)
    put(s3_client, bucket, "run/ckpt/model--step=150-val=0.5.ckpt", b"c")
    put(s3_client, bucket, "run/ckpt/sharded--step=300-last/rank0.pt", b"d" * 5)
    put(s3_client, bucket, "run/ckpt/sharded--step=300-last/rank1.pt", b"e" * 7)

    result = s3ckpt("ls", f"s3://{bucket}/run/ckpt")

    assert result.code == exit_codes.OK, result
    lines = result.out.splitlines()
    assert "STEP" in lines[0]
    assert "NAME" in lines[0]
    rows = {
        line.split()[-1] if "(" not in line else line.split("  (")[0].split()[-1]: line for line in lines[1:]
    }
    assert "2.0 KiB" in rows["model--step=100-last.ckpt"]
    assert " 150 " in rows["model--step=150-val=0.5.ckpt"]
    assert rows["model--step=200-last.ckpt"].startswith("* ")
    assert "sharded--step=300-last/" in rows
    assert "12 B" in rows["sharded--step=300-last/"]
    assert "2 objects" in rows["sharded--step=300-last/"]
    assert lines[-1] == f"resume: s3://{bucket}/run/ckpt/model--step=200-last.ckpt"


def test_ls_skips_a_checkpoint_marked_unfinished(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/m--step=5-last.ckpt")
    put(s3_client, bucket, "c/m--step=9-last.ckpt")
    put(s3_client, bucket, "c/m--step=9-last-unfinished")

    result = s3ckpt("ls", f"s3://{bucket}/c/")

    assert result.code == exit_codes.OK
    assert "unfinished, never resumed from" in result.out
    assert result.out.splitlines()[-1] == f"resume: s3://{bucket}/c/m--step=5-last.ckpt"


def test_ls_json_is_machine_readable(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/a--step=3-end.ckpt", b"123")
    put(s3_client, bucket, "c/a--step=7-last.ckpt", b"1")

    result = s3ckpt("ls", "--json", f"s3://{bucket}/c")

    data = json.loads(result.out)
    assert data["resume"] == f"s3://{bucket}/c/a--step=3-end.ckpt"  # a finished run wins over -last
    assert [(c["name"], c["step"], c["size"]) for c in data["checkpoints"]] == [
        ("a--step=3-end.ckpt", 3, 3),
        ("a--step=7-last.ckpt", 7, 1),
    ]


def test_ls_says_when_a_resume_would_start_from_scratch(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/a--step=3-val=1.ckpt")
    result = s3ckpt("ls", f"s3://{bucket}/c")
    assert result.code == exit_codes.OK
    assert "resume: none" in result.out


def test_ls_of_one_object_shows_that_object(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/m--step=4-last.ckpt", b"1234")
    put(s3_client, bucket, "c/m--step=4-last.ckpt.bak", b"1")
    result = s3ckpt("ls", f"s3://{bucket}/c/m--step=4-last.ckpt")
    assert result.code == exit_codes.OK, result
    assert result.out.splitlines()[1].split()[-1] == "m--step=4-last.ckpt"
    assert result.out.splitlines()[-1] == f"resume: s3://{bucket}/c/m--step=4-last.ckpt"


def test_ls_of_an_empty_prefix_is_not_found(bucket: str) -> None:
    result = s3ckpt("ls", f"s3://{bucket}/nothing-here")
    assert result.code == exit_codes.NOT_FOUND
    assert "nothing under" in result.err


def test_ls_of_a_missing_bucket_is_not_found(s3_server: Any) -> None:
    result = s3ckpt("ls", "s3://no-such-bucket-s3ckpt/x")
    assert result.code == exit_codes.NOT_FOUND
    assert "no-such-bucket-s3ckpt" in result.err


@pytest.mark.parametrize("url", ["/local/path", "s3://Bad_Bucket/x", "s3://"])
def test_a_bad_url_is_a_usage_error_naming_it(url: str, s3_server: Any) -> None:
    result = s3ckpt("ls", url)
    assert result.code == exit_codes.USAGE
    assert "s3ckpt ls: error:" in result.err


def test_an_unknown_option_is_a_usage_error() -> None:
    result = s3ckpt("ls", "--no-such-option", "s3://b/x")
    assert result.code == exit_codes.USAGE


# -- cp ------------------------------------------------------------------------------------------------


def test_cp_round_trip_multipart_with_progress(tmp_path: Path, bucket: str, s3_client: Any) -> None:
    payload = payloads.payload(12 * MiB + 123)
    source = tmp_path / "model.ckpt"
    source.write_bytes(payload)

    up = s3ckpt(
        "cp", "--chunk-size-mb", "5", "--concurrency", "3", str(source), f"s3://{bucket}/ckpt/", progress=True
    )

    assert up.code == exit_codes.OK, up
    assert object_keys(s3_client, bucket) == ["ckpt/model.ckpt"]
    assert s3_client.head_object(Bucket=bucket, Key="ckpt/model.ckpt")["ETag"].endswith('-3"')
    assert "12.0M/12.0M" in up.err
    assert "100%" in up.err

    target = tmp_path / "back"
    target.mkdir()
    down = s3ckpt("cp", "--chunk-size-mb", "5", f"s3://{bucket}/ckpt/model.ckpt", str(target), progress=True)

    assert down.code == exit_codes.OK, down
    assert (target / "model.ckpt").read_bytes() == payload
    assert "100%" in down.err
    assert [p.name for p in target.iterdir()] == ["model.ckpt"]  # no temporary left behind


def test_cp_download_overwrites_only_when_complete(tmp_path: Path, bucket: str, s3_client: Any) -> None:
    put(s3_client, bucket, "k.ckpt", b"new contents")
    target = tmp_path / "k.ckpt"
    target.write_bytes(b"old")

    assert s3ckpt("cp", f"s3://{bucket}/k.ckpt", str(target)).code == exit_codes.OK
    assert target.read_bytes() == b"new contents"


def test_cp_of_a_missing_object_is_not_found_and_creates_nothing(tmp_path: Path, bucket: str) -> None:
    result = s3ckpt("cp", f"s3://{bucket}/missing.ckpt", str(tmp_path / "x.ckpt"))
    assert result.code == exit_codes.NOT_FOUND
    assert "missing.ckpt" in result.err
    assert list(tmp_path.iterdir()) == []


def test_cp_of_a_missing_local_file_is_not_found(tmp_path: Path, bucket: str, s3_client: Any) -> None:
    result = s3ckpt("cp", str(tmp_path / "nope.ckpt"), f"s3://{bucket}/nope.ckpt")
    assert result.code == exit_codes.NOT_FOUND
    assert "nope.ckpt" in result.err
    assert object_keys(s3_client, bucket) == []


def test_cp_into_a_missing_local_folder_is_not_found(tmp_path: Path, bucket: str, s3_client: Any) -> None:
    put(s3_client, bucket, "k.ckpt")
    result = s3ckpt("cp", f"s3://{bucket}/k.ckpt", str(tmp_path / "no" / "dir" / "k.ckpt"))
    assert result.code == exit_codes.NOT_FOUND
    assert "no such folder" in result.err


@pytest.mark.parametrize(("src", "dst"), [("a.ckpt", "b.ckpt"), ("s3://bucket-one/a", "s3://bucket-two/b")])
def test_cp_needs_exactly_one_s3_side(src: str, dst: str) -> None:
    result = s3ckpt("cp", src, dst)
    assert result.code == exit_codes.USAGE
    assert "between a local path and S3" in result.err


def test_cp_rejects_a_bad_chunk_size_before_sending_anything(
    tmp_path: Path, bucket: str, s3_client: Any
) -> None:
    source = tmp_path / "a.ckpt"
    source.write_bytes(b"abc")
    result = s3ckpt("cp", "--chunk-size-mb", "1", str(source), f"s3://{bucket}/a.ckpt")
    assert result.code == exit_codes.USAGE
    assert "chunk_size_MB" in result.err
    assert object_keys(s3_client, bucket) == []


def test_cp_to_dev_null_writes_straight_to_the_device(bucket: str, s3_client: Any) -> None:
    put(s3_client, bucket, "k.ckpt", b"abc")
    result = s3ckpt("cp", f"s3://{bucket}/k.ckpt", os.devnull)
    assert result.code == exit_codes.OK, result
    assert Path(os.devnull).is_char_device()


# -- rm ------------------------------------------------------------------------------------------------


def test_rm_with_yes_deletes_one_checkpoint(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/a.ckpt")
    put(s3_client, bucket, "c/b.ckpt")
    result = s3ckpt("rm", "--yes", f"s3://{bucket}/c/a.ckpt")
    assert result.code == exit_codes.OK, result
    assert object_keys(s3_client, bucket) == ["c/b.ckpt"]


def test_rm_without_yes_and_without_a_terminal_refuses(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/a.ckpt")
    result = s3ckpt("rm", f"s3://{bucket}/c/a.ckpt")
    assert result.code == exit_codes.USAGE
    assert "--yes" in result.err
    assert object_keys(s3_client, bucket) == ["c/a.ckpt"]


def test_rm_of_a_folder_needs_recursive(s3_client: Any, bucket: str) -> None:
    put(s3_client, bucket, "c/sharded/0.pt")
    result = s3ckpt("rm", "--yes", f"s3://{bucket}/c/sharded")
    assert result.code == exit_codes.USAGE
    assert "--recursive" in result.err
    assert object_keys(s3_client, bucket) == ["c/sharded/0.pt"]


def test_rm_recursive_deletes_only_under_the_prefix(s3_client: Any, bucket: str) -> None:
    for i in range(5):
        put(s3_client, bucket, f"c/sharded/{i}.pt")
    put(s3_client, bucket, "c/sharded-other.pt")
    result = s3ckpt("rm", "-r", "-y", f"s3://{bucket}/c/sharded")
    assert result.code == exit_codes.OK, result
    assert "deleted 5 objects" in result.out
    assert object_keys(s3_client, bucket) == ["c/sharded-other.pt"]


def test_rm_of_something_missing_is_not_found(bucket: str) -> None:
    assert s3ckpt("rm", "-y", f"s3://{bucket}/gone.ckpt").code == exit_codes.NOT_FOUND
    assert s3ckpt("rm", "-r", "-y", f"s3://{bucket}/gone/").code == exit_codes.NOT_FOUND


# -- cleanup ---------------------------------------------------------------------------------------------


def test_cleanup_aborts_only_uploads_older_than_the_age(s3_client: Any, bucket: str) -> None:
    s3_client.create_multipart_upload(Bucket=bucket, Key="run/ckpt/killed.ckpt")
    s3_client.create_multipart_upload(Bucket=bucket, Key="elsewhere/killed.ckpt")

    # moto reports every upload as initiated in 2010, so "older than 1000 weeks" (19 years) keeps them
    kept = s3ckpt("cleanup", f"s3://{bucket}/run/", "--older-than", "1000w")
    assert kept.code == exit_codes.OK
    assert "aborted 0 incomplete uploads" in kept.out

    aborted = s3ckpt("cleanup", f"s3://{bucket}/run/")
    assert aborted.code == exit_codes.OK, aborted
    assert "aborted 1 incomplete uploads" in aborted.out
    left = [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["elsewhere/killed.ckpt"]


@pytest.mark.parametrize("age", ["yesterday", "1y", "-1d", ""])
def test_cleanup_rejects_an_unreadable_age(age: str, bucket: str) -> None:
    result = s3ckpt("cleanup", f"s3://{bucket}/", f"--older-than={age}")
    assert result.code == exit_codes.USAGE
    assert "--older-than" in result.err
    assert "30m" in result.err


# -- bench -----------------------------------------------------------------------------------------------


def test_bench_prints_the_grid_and_a_recommendation_and_cleans_up(s3_client: Any, bucket: str) -> None:
    result = s3ckpt(
        "bench", f"s3://{bucket}/scratch", "--size-mb", "11", "--chunk-sizes", "5,6", "--concurrency", "1,3"
    )

    assert result.code == exit_codes.OK, result
    rows = [line.split() for line in result.out.splitlines() if line[:9].strip().isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("5", "1"), ("5", "3"), ("6", "1"), ("6", "3")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    assert "s3_checkpointing:" in result.out
    assert "chunk_size_MB: " in result.out
    assert "S3CheckpointIO(dirpath, chunk_size_MB=" in result.out
    assert object_keys(s3_client, bucket) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-sizes", "4"], "5 to 5120"),
        (["--ranks", "0"], "--ranks"),
        (["--size-mb", "0"], "--size-mb"),
        (["--concurrency", "two"], "integers"),
    ],
)
def test_bench_rejects_bad_settings(args: list[str], message: str, bucket: str) -> None:
    result = s3ckpt("bench", f"s3://{bucket}/scratch", *args)
    assert result.code == exit_codes.USAGE
    assert message in result.err


# -- verify ----------------------------------------------------------------------------------------------


def test_verify_checks_a_multipart_checkpoint_written_by_the_store(store: Any, bucket: str) -> None:
    payload = payloads.payload(11 * MiB)
    store.upload_bytes(f"s3://{bucket}/m.ckpt", payload)

    result = s3ckpt("verify", "--no-load", f"s3://{bucket}/m.ckpt")

    assert result.code == exit_codes.OK, result
    assert "FAILED" not in result.out
    assert result.out.splitlines()[-1] == f"verified s3://{bucket}/m.ckpt (11.0 MiB)"


def test_verify_checks_the_md5_etag_when_no_other_checksum_is_stored(s3_server: Any, bucket: str) -> None:
    no_checksums = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        config=Config(request_checksum_calculation="when_required"),
    )
    put(no_checksums, bucket, "plain.ckpt", b"hello checkpoint")
    result = s3ckpt("verify", "--no-load", f"s3://{bucket}/plain.ckpt")
    assert result.code == exit_codes.OK, result
    assert "checksum  skipped" in result.out
    assert any(line.startswith("etag") and " ok " in line for line in result.out.splitlines())


def test_verify_checks_the_md5_etag_of_an_upload_whose_parts_grew(s3_server: Any, bucket: str) -> None:
    # parts start at 5 MiB and grow towards the chunk size, so they are not all the first part's size
    transfer = TransferConfig(chunk_size_MB=16, max_concurrency=2, checksum=False)
    url = f"s3://{bucket}/grown.ckpt"
    with S3Store(S3ClientConfig.from_env(), transfer) as plain, plain.open_writer(url) as writer:
        writer.write(payloads.payload(33 * MiB))
    result = s3ckpt("verify", "--no-load", url)
    assert result.code == exit_codes.OK, result
    assert any(
        line.startswith("etag") and " ok " in line and "-4" in line for line in result.out.splitlines()
    )


def test_verify_of_a_missing_object_is_not_found(bucket: str) -> None:
    assert s3ckpt("verify", f"s3://{bucket}/nope.ckpt").code == exit_codes.NOT_FOUND


def test_verify_of_a_prefix_is_a_usage_error(bucket: str) -> None:
    assert s3ckpt("verify", f"s3://{bucket}/dir/").code == exit_codes.USAGE


@pytest.mark.parametrize("command", ["ls", "cp", "rm", "cleanup", "bench", "verify"])
def test_every_subcommand_has_help(command: str) -> None:
    result = s3ckpt(command, "--help")
    assert result.code == exit_codes.OK
    assert result.out.startswith(f"usage: s3ckpt {command}")


def test_verify_checks_a_composite_checksum_of_parts(s3_client: Any, bucket: str) -> None:
    # CRC32, not CRC32C: without the optional crc32c package moto computes CRC32 for either
    payload = payloads.payload(11 * MiB)
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="c.ckpt", ChecksumAlgorithm="CRC32")
    parts = []
    for number, start in enumerate(range(0, len(payload), 5 * MiB), start=1):
        answer = s3_client.upload_part(
            Bucket=bucket,
            Key="c.ckpt",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=payload[start : start + 5 * MiB],
            ChecksumAlgorithm="CRC32",
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": answer["ChecksumCRC32"]})
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="c.ckpt", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )

    result = s3ckpt("verify", "--no-load", f"s3://{bucket}/c.ckpt")

    assert result.code == exit_codes.OK, result
    assert any(
        line.startswith("crc32 ") and "composite of 3 parts" in line for line in result.out.splitlines()
    )


def test_verify_reports_a_checksum_mismatch_with_its_own_exit_code(s3_server: Any, bucket: str) -> None:
    # moto stores a client-supplied checksum without checking it, which stands in for a writer that
    # sent bytes other than the ones it checksummed
    client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, config=Config(request_checksum_calculation="when_required")
    )
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    client.put_object(
        Bucket=bucket,
        Key="bad.ckpt",
        Body=b"checkpoint bytes",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=wrong,
    )

    result = s3ckpt("verify", "--no-load", f"s3://{bucket}/bad.ckpt")

    assert result.code == exit_codes.CHECK_FAILED
    assert any(
        line.startswith("sha256") and "FAILED" in line and wrong in line for line in result.out.splitlines()
    )
    assert result.out.splitlines()[-1] == f"BAD: s3://{bucket}/bad.ckpt"


def test_verify_without_the_torch_plugin_says_how_to_check_loading(
    s3_client: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as with only s3-utils installed (the utils session has no plugin anyway; .venv may have one)
    monkeypatch.setattr("s3_utils.cli.verify.load_plugins", list)
    put(s3_client, bucket, "k.ckpt", b"bytes")

    result = s3ckpt("verify", f"s3://{bucket}/k.ckpt")

    assert result.code == exit_codes.OK, result
    loads = next(line for line in result.out.splitlines() if line.startswith("loads"))
    assert "skipped" in loads
    assert "pip install s3-checkpoint-io" in loads


def test_cp_upload_to_a_missing_bucket_is_not_found(tmp_path: Path, s3_server: Any) -> None:
    source = tmp_path / "a.ckpt"
    source.write_bytes(b"abc")
    result = s3ckpt("cp", str(source), "s3://no-such-bucket-s3ckpt/a.ckpt")
    assert result.code == exit_codes.NOT_FOUND, result
    assert "no-such-bucket-s3ckpt" in result.err


def test_cp_of_a_folder_is_a_usage_error(tmp_path: Path, bucket: str, s3_client: Any) -> None:
    result = s3ckpt("cp", str(tmp_path), f"s3://{bucket}/x/")
    assert result.code == exit_codes.USAGE
    assert "is a folder" in result.err
    assert object_keys(s3_client, bucket) == []
