"""S3's limits are stated once, in s3_utils.limits; every check and recommendation imports them."""

from __future__ import annotations

import pathlib
import re

from s3_utils import limits

ROOT = pathlib.Path(__file__).resolve().parents[2]
S3_UTILS = ROOT / "packages" / "s3-utils" / "src" / "s3_utils"
PART_LIMITS = re.compile(r"\b10_?000\b|\b5 \* (1024|MiB|GiB|TiB)\b|\b1000\b")
PART_SIZES = re.compile(
    r"\b10_?000\b|\b5 \* (1024|MiB|GiB|TiB)\b"
)  # outside s3-utils 1000 means other things
REQUEST_RATES = re.compile(r"\b(3_?500|5_?500)\b")


def code_lines(path: pathlib.Path) -> list[tuple[int, str]]:
    return [
        (number, line)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_s3_utils_states_part_object_and_batch_limits_only_in_the_limits_module() -> None:
    restated = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in S3_UTILS.rglob("*.py")
        if path.name != "limits.py"
        for number, line in code_lines(path)
        if PART_LIMITS.search(line)
    ]
    assert restated == []


def test_no_package_restates_s3s_part_sizes_or_part_count() -> None:
    restated = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in (ROOT / "packages").glob("*/src/**/*.py")
        if path != S3_UTILS / "limits.py"
        for number, line in code_lines(path)
        if PART_SIZES.search(line)
    ]
    assert restated == []


def test_request_rates_are_stated_only_in_the_limits_module() -> None:
    restated = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in (ROOT / "packages").glob("*/src/**/*.py")
        if path != S3_UTILS / "limits.py"
        for number, line in code_lines(path)
        if REQUEST_RATES.search(line)
    ]
    assert restated == []


def test_the_limits_are_s3s() -> None:
    assert limits.MIN_PART_SIZE == 5 * 1024**2
    assert limits.MAX_PART_SIZE == limits.MAX_SINGLE_PUT_SIZE == 5 * 1024**3
    assert limits.MAX_OBJECT_SIZE == 5 * 1024**4
    assert limits.MAX_PARTS == 10_000
    assert (limits.PUT_REQUESTS_PER_PREFIX_PER_S, limits.GET_REQUESTS_PER_PREFIX_PER_S) == (3500, 5500)
    assert limits.MAX_KEYS_PER_DELETE == limits.MAX_KEYS_PER_LIST == 1000
