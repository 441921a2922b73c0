"""limits.check_part_size_MB: the one check of a part size in MiB, shared by every config class."""

from __future__ import annotations

import math

import pytest

from s3_utils.errors import S3ConfigError
from s3_utils.limits import check_part_size_MB


@pytest.mark.parametrize("size", [5, 64, 5120, 7.5])
def test_sizes_in_s3s_range_pass(size: float) -> None:
    check_part_size_MB(size)


@pytest.mark.parametrize("size", [4, 5121, math.inf])
def test_sizes_out_of_range_are_refused_naming_the_range(size: float) -> None:
    with pytest.raises(S3ConfigError, match=r"out of range: S3 parts must be 5 to 5120 MiB"):
        check_part_size_MB(size)


@pytest.mark.parametrize("size", [True, "64", math.nan, None])
def test_what_is_not_a_number_is_refused(size: object) -> None:
    with pytest.raises(S3ConfigError, match="must be a number of MiB"):
        check_part_size_MB(size, "part_MB")
