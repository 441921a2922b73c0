"""checksums.request_arguments: the checksum arguments each S3 request sends, built in one place."""

from __future__ import annotations

import pytest

from s3_utils import checksums


def test_uploads_of_bytes_name_the_algorithm_and_state_the_crc() -> None:
    for operation in ("PutObject", "UploadPart"):
        assert checksums.request_arguments(operation, 1) == {
            "ChecksumAlgorithm": "CRC64NVME",
            "ChecksumCRC64NVME": checksums.to_base64(1),
        }


def test_the_ends_of_a_multipart_upload_ask_for_a_full_object_checksum() -> None:
    assert checksums.request_arguments("CreateMultipartUpload") == {
        "ChecksumAlgorithm": "CRC64NVME",
        "ChecksumType": "FULL_OBJECT",
    }
    assert checksums.request_arguments("CompleteMultipartUpload", "AAAAAAAAAAE=") == {
        "ChecksumCRC64NVME": "AAAAAAAAAAE=",
        "ChecksumType": "FULL_OBJECT",
    }


def test_a_copy_names_the_algorithm_only() -> None:
    assert checksums.request_arguments("CopyObject") == {"ChecksumAlgorithm": "CRC64NVME"}


def test_another_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="GetObject"):
        checksums.request_arguments("GetObject")
