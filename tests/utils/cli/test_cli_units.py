"""The CLI's pure parts: durations, sizes, the request-budget recommendation, checksum arithmetic,
the progress bar."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3_utils.cli.console import Console
from s3_utils.cli.durations import parse_duration
from s3_utils.cli.formatting import human_size
from s3_utils.cli.integrity import StoredChecksum, check_checksum, check_etag, parts_in, stored_checksum
from s3_utils.cli.tuning import (
    GET_REQUESTS_PER_PREFIX_PER_S,
    PUT_REQUESTS_PER_PREFIX_PER_S,
    BenchResult,
    recommend,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("0.5h", timedelta(minutes=30)),
        (" 0s ", timedelta(0)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["1", "d", "1y", "-1d", "1 day", ""])
def test_unreadable_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 90s, 30m, 12h, 1d or 2w"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * MiB, "5.0 MiB"), (3 << 40, "3.0 TiB")],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def result(chunk: int, concurrency: int, write_s: float, read_s: float, size: int = 256 * MiB) -> BenchResult:
    return BenchResult(chunk, concurrency, size, write_s, read_s)


def test_recommendation_prefers_the_fastest_setting_within_budget() -> None:
    grid = [result(8, 32, 0.25, 0.2), result(64, 16, 0.5, 0.4), result(64, 4, 1.0, 0.8)]
    # one rank: 8 MiB parts at 1 GiB/s is only ~130 PUT/s, so the fastest wins
    assert recommend(grid, ranks=1).chunk_size_MB == 8
    # 64 ranks: 8 MiB parts would be ~8,400 PUT/s; 64 MiB parts at 16 in flight stay under the budget
    best = recommend(grid, ranks=64)
    assert (best.chunk_size_MB, best.max_write_concurrency, best.within_budget) == (64, 16, True)
    assert best.total_puts_per_s <= 0.8 * PUT_REQUESTS_PER_PREFIX_PER_S


def test_recommendation_says_when_nothing_fits() -> None:
    best = recommend([result(8, 32, 0.01, 0.01), result(16, 32, 0.02, 0.02)], ranks=1000)
    assert not best.within_budget
    assert best.chunk_size_MB == 16  # the gentlest measured


def test_recommendation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        recommend([])
    with pytest.raises(ValueError, match="ranks"):
        recommend([result(8, 4, 1, 1)], ranks=0)
    with pytest.raises(ValueError, match="write_s"):
        result(8, 4, 0, 1)


cells = st.builds(
    BenchResult,
    chunk_size_MB=st.sampled_from([5, 8, 16, 32, 64, 128]),
    concurrency=st.integers(1, 64),
    size_bytes=st.integers(1, 2 << 30),
    write_s=st.floats(0.001, 100),
    read_s=st.floats(0.001, 100),
)


@given(st.lists(cells, min_size=1, max_size=12), st.integers(1, 512))
def test_a_recommendation_within_budget_really_is_within_budget(grid: list[BenchResult], ranks: int) -> None:
    best = recommend(grid, ranks=ranks)
    assert (best.chunk_size_MB, best.max_write_concurrency) in {
        (r.chunk_size_MB, r.concurrency) for r in grid
    }
    if best.within_budget:
        assert best.total_puts_per_s <= 0.8 * PUT_REQUESTS_PER_PREFIX_PER_S + 1e-6
        assert best.total_gets_per_s <= 0.8 * GET_REQUESTS_PER_PREFIX_PER_S + 1e-6
    else:
        assert all(
            r.puts_per_s * ranks > 0.8 * PUT_REQUESTS_PER_PREFIX_PER_S
            or r.gets_per_s * ranks > 0.8 * GET_REQUESTS_PER_PREFIX_PER_S
            for r in grid
        )


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_full_object_and_composite_checksums() -> None:
    data = bytes(range(256)) * 100
    crc = b64(zlib.crc32(data).to_bytes(4, "big"))
    assert check_checksum(data, StoredChecksum("CRC32", crc, False), None).ok is True
    assert check_checksum(data + b"!", StoredChecksum("CRC32", crc, False), None).ok is False

    parts = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]
    inner = b"".join(hashlib.sha256(p).digest() for p in parts)
    composite = f"{b64(hashlib.sha256(inner).digest())}-{len(parts)}"
    assert check_checksum(data, StoredChecksum("SHA256", composite, True), [10_000] * 2 + [5_600]).ok is True
    assert check_checksum(data, StoredChecksum("SHA256", composite, True), [9_000] * 2 + [7_600]).ok is False
    assert check_checksum(data, StoredChecksum("SHA256", composite, True), None).ok is None


def test_md5_etags_single_and_multipart() -> None:
    data = b"a" * 25
    assert check_etag(data, f'"{hashlib.md5(data).hexdigest()}"', None).ok is True
    inner = b"".join(hashlib.md5(data[i : i + 10]).digest() for i in (0, 10, 20))
    etag = f'"{hashlib.md5(inner).hexdigest()}-3"'
    assert check_etag(data, etag, [10, 10, 5]).ok is True
    assert check_etag(data, etag, [12, 12, 1]).ok is False
    assert check_etag(data, '"not-an-md5"', None).ok is None


def test_md5_etags_of_parts_of_different_sizes() -> None:
    data = (
        bytes(range(256)) * 4
    )  # 1024 bytes in parts of 100, 200, 400 and the rest, as a growing writer sends
    sizes = [100, 200, 400, 324]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(data[start : start + size])
        start += size
    etag = f'"{hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).hexdigest()}-4"'
    assert check_etag(data, etag, sizes).ok is True
    assert check_etag(data, etag, [256] * 4).ok is False  # equal parts would be a false alarm


def test_stored_checksum_and_part_counts_are_read_from_a_head_answer() -> None:
    head = {"ChecksumCRC64NVME": "AAAAAAAAAAA=", "ChecksumType": "FULL_OBJECT"}
    assert stored_checksum(head) == StoredChecksum("CRC64NVME", "AAAAAAAAAAA=", False)
    assert stored_checksum({"ChecksumCRC32C": "abc=-4"}) == StoredChecksum("CRC32C", "abc=-4", True)
    assert stored_checksum({}) is None
    assert parts_in('"0123-12"') == 12
    assert parts_in('"0123"') is None
    assert parts_in("-") is None


def test_the_progress_bar_shows_bytes_rate_and_time_left_and_ends_the_line() -> None:
    err = io.StringIO()
    with Console(err=err, progress=True).progress_bar("model.ckpt", 4 * MiB) as progress:
        for _ in range(4):
            progress.update(MiB)
    text = err.getvalue()
    final = text.rsplit("\r", 1)[-1]
    assert final.startswith("model.ckpt: 100%")
    assert "4.00M/4.00M" in final  # MiB, as the rate says
    assert "<00:00" in final  # elapsed<remaining
    assert "iB/s]" in final
    assert text.endswith("\n")


def test_no_progress_bar_is_drawn_unless_err_is_a_terminal() -> None:
    err = io.StringIO()  # not a terminal
    with Console(err=err).progress_bar("x", 10) as progress:
        progress.update(10)
    assert err.getvalue() == ""
