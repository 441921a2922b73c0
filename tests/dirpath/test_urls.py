"""Behaviour of the s3:// URL helpers."""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3_dirpath_utils import (
    S3_PATH_PREFIX,
    bucket_name_problem,
    build_s3_url,
    is_s3_url,
    join_s3_url,
    normalize_s3_url,
    parse_s3_url,
    require_s3_url,
)

valid_buckets = st.from_regex(r"[a-z0-9][a-z0-9-]{1,40}[a-z0-9]", fullmatch=True).filter(
    lambda b: bucket_name_problem(b) is None
)
key_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and s != ".")
keys = st.lists(key_segment, min_size=0, max_size=5).map("/".join)


def test_prefix_constant_matches_nemo() -> None:
    assert S3_PATH_PREFIX == "s3://"


@pytest.mark.parametrize(
    "path",
    [
        "s3://bucket/key",
        "  s3://bucket/key\n",
        "s3://bucket",
        pathlib.Path("s3://bucket/key"),
        "s3:/bucket/k",
    ],
)
def test_is_s3_url_accepts_s3_forms(path: object) -> None:
    assert is_s3_url(path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path", [None, "", "/tmp/x", "bucket/key", "S3://bucket/key", "s3:bucket", pathlib.Path("/tmp/x"), 42]
)
def test_is_s3_url_rejects_everything_else(path: object) -> None:
    assert not is_s3_url(path)  # type: ignore[arg-type]


def test_pathlib_collapsed_url_is_normalized() -> None:
    collapsed = pathlib.Path("s3://bucket/run/last.ckpt")
    assert str(collapsed) == "s3:/bucket/run/last.ckpt"
    assert normalize_s3_url(collapsed) == "s3://bucket/run/last.ckpt"
    assert parse_s3_url(collapsed) == ("bucket", "run/last.ckpt")


def test_normalize_rejects_local_path_with_hint() -> None:
    with pytest.raises(ValueError, match=r"not an S3 URL: '/tmp/x'.*s3://bucket/key"):
        normalize_s3_url("/tmp/x")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/a/b.ckpt", ("bucket", "a/b.ckpt")),
        ("s3://bucket/a/b/", ("bucket", "a/b/")),
        (" s3://my.bucket-1/x ", ("my.bucket-1", "x")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3:///key", "has no bucket name"),
        ("s3://", "has no bucket name"),
        ("s3://ab/k", "3 to 63 characters"),
        ("s3://" + "a" * 64 + "/k", "3 to 63 characters"),
        ("s3://My_Bucket/k", "lowercase letters"),
        ("s3://-bucket/k", "begin and end"),
        ("s3://bucket-/k", "begin and end"),
        ("s3://my..bucket/k", "two adjacent periods"),
        ("s3://192.168.1.1/k", "IP address"),
        ("s3://xn--bucket/k", "reserved prefix"),
        ("s3://bucket-s3alias/k", "reserved suffix"),
        ("http://bucket/k", "not an S3 URL"),
    ],
)
def test_parse_s3_url_names_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as excinfo:
        parse_s3_url(url)
    assert repr(url.strip()) in str(excinfo.value) or "not an S3 URL" in str(excinfo.value)


def test_build_s3_url() -> None:
    assert build_s3_url("bucket", "a/b") == "s3://bucket/a/b"
    assert build_s3_url("bucket", "/a/b") == "s3://bucket/a/b"
    assert build_s3_url("bucket") == "s3://bucket/"


def test_build_s3_url_rejects_bad_bucket() -> None:
    with pytest.raises(ValueError, match="bucket name 'B' must be 3 to 63"):
        build_s3_url("B", "k")


@pytest.mark.parametrize(
    ("base", "parts", "expected"),
    [
        ("s3://b0b/run", ("ckpt", "last.ckpt"), "s3://b0b/run/ckpt/last.ckpt"),
        ("s3://b0b/run/", ("/ckpt/", "last.ckpt"), "s3://b0b/run/ckpt/last.ckpt"),
        ("s3://b0b", ("x",), "s3://b0b/x"),
        ("s3://b0b/run", ("", "x"), "s3://b0b/run/x"),
        ("s3://b0b/run", ("sub/",), "s3://b0b/run/sub/"),
        ("s3://b0b/run", (), "s3://b0b/run"),
        (pathlib.Path("s3://b0b/run"), ("x",), "s3://b0b/run/x"),
    ],
)
def test_join_s3_url(base: str, parts: tuple[str, ...], expected: str) -> None:
    assert join_s3_url(base, *parts) == expected


@given(bucket=valid_buckets, key=keys)
def test_build_then_parse_round_trips(bucket: str, key: str) -> None:
    assert parse_s3_url(build_s3_url(bucket, key)) == (bucket, key)


@given(bucket=valid_buckets, key=keys)
def test_parse_then_build_round_trips(bucket: str, key: str) -> None:
    url = f"s3://{bucket}/{key}"
    assert build_s3_url(*parse_s3_url(url)) == url


@given(bucket=valid_buckets, key=keys)
def test_pathlib_round_trip_keeps_the_url(bucket: str, key: str) -> None:
    url = build_s3_url(bucket, key).rstrip("/")
    assert normalize_s3_url(pathlib.Path(url)) == url or key == ""


@given(bucket=valid_buckets, segments=st.lists(key_segment, min_size=1, max_size=4))
def test_join_never_doubles_slashes(bucket: str, segments: list[str]) -> None:
    joined = join_s3_url(f"s3://{bucket}/", *segments)
    assert "//" not in joined[len("s3://") :]
    assert parse_s3_url(joined) == (bucket, "/".join(segments))


def test_require_s3_url_returns_the_normalized_url() -> None:
    assert require_s3_url(pathlib.Path("s3://bucket/run/k.ckpt")) == "s3://bucket/run/k.ckpt"
    assert require_s3_url(" s3://bucket ") == "s3://bucket"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (None, "dirpath must be an s3://bucket/key URL, got None; use a local API"),
        ("/tmp/x", "dirpath must be an s3://bucket/key URL, got '/tmp/x'; use a local API"),
        (pathlib.Path("/tmp/x"), "got '/tmp/x'"),
        ("s3:///k", "dirpath: S3 URL 's3:///k' has no bucket name"),
        ("s3://Bad_Bucket/k", "dirpath: S3 URL 's3://Bad_Bucket/k': bucket name 'Bad_Bucket'"),
    ],
)
def test_require_s3_url_names_what_and_the_problem(path: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        require_s3_url(path, "dirpath", "use a local API")  # type: ignore[arg-type]


def test_require_s3_url_without_hint_ends_at_the_value() -> None:
    with pytest.raises(ValueError, match=r"got 'x'$"):
        require_s3_url("x")
