"""The per-prefix request budget rule, stated once in s3_utils.limits."""

from __future__ import annotations

import pytest

from s3_utils.limits import prefix_request_rate_excess


def test_prefix_request_rate_excess_names_the_rate_the_budget_and_the_highest_concurrency() -> None:
    assert prefix_request_rate_excess(8, 100, "PUT") is None  # 8 x 100 x 1.15 = 920/s
    message = prefix_request_rate_excess(64, 100, "GET")  # 7360/s
    assert message is not None
    assert "64 clients x 100 requests in flight can reach 7360 GET/s" in message
    assert "S3's 5500 GET/s per prefix" in message
    assert "concurrency <= 74" in message
    with pytest.raises(ValueError, match="'DELETE'"):
        prefix_request_rate_excess(1, 1, "DELETE")
