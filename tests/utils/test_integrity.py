"""Uploads carry a CRC64NVME; downloads recompute it from the ranges and compare with the server's."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from awscrt import checksums
from hypothesis import given
from hypothesis import strategies as st

from s3_utils import S3IntegrityError, S3Store
from s3_utils import checksums as s3_checksums
from support.payloads import payload
from support.stores import CHUNK, small_store


def crc64(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.mark.parametrize(
    "size", [0, 10, CHUNK + 1, 3 * CHUNK + 7], ids=["empty", "small", "2-parts", "4-parts"]
)
def test_stored_checksum_is_the_full_object_crc64nvme(store: S3Store, bucket: str, size: int) -> None:
    data = payload(size)
    store.upload_bytes(f"s3://{bucket}/obj", data)
    info = store.head(f"s3://{bucket}/obj")
    assert info.checksum_crc64nvme == crc64(data)
    assert info.full_object_checksum == crc64(data)


def test_corrupt_stored_object_fails_download_naming_it(store: S3Store, bucket: str, s3_client: Any) -> None:
    data = payload(2 * CHUNK + 3)
    # A store whose bytes no longer match the checksum recorded when they were written.
    s3_client.put_object(
        Bucket=bucket,
        Key="rotten.ckpt",
        Body=data,
        ChecksumAlgorithm="CRC64NVME",
        ChecksumCRC64NVME=crc64(b"other"),
    )
    with pytest.raises(S3IntegrityError, match=rf"s3://{bucket}/rotten.ckpt: CRC64NVME .* is {crc64(data)}"):
        store.download_bytes(f"s3://{bucket}/rotten.ckpt")


def test_checksums_can_be_turned_off(s3_server: Any, bucket: str, s3_client: Any) -> None:
    s3_client.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"bytes",
        ChecksumAlgorithm="CRC64NVME",
        ChecksumCRC64NVME=crc64(b"other"),
    )
    with small_store(checksum=False) as store:
        assert store.download_bytes(f"s3://{bucket}/k") == b"bytes"
        store.upload_bytes(f"s3://{bucket}/plain", b"no checksum")
        assert store.head(f"s3://{bucket}/plain").checksum_crc64nvme is None


def test_object_without_checksum_downloads_unverified(store: S3Store, bucket: str, s3_client: Any) -> None:
    s3_client.put_object(Bucket=bucket, Key="legacy", Body=b"old object")
    assert store.head(f"s3://{bucket}/legacy").full_object_checksum is None
    assert store.download_bytes(f"s3://{bucket}/legacy") == b"old object"


@given(first=st.binary(max_size=4096), second=st.binary(max_size=4096))
def test_python_crc_combine_matches_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    # the fallback used with awscrt releases that lack combine_crc64nvme
    combined = s3_checksums._combine_in_python(s3_checksums.crc(first), s3_checksums.crc(second), len(second))
    assert combined == s3_checksums.crc(first + second)
