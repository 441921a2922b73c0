"""Warn when a sharded save or load can exceed S3's request rate on one key prefix."""

from __future__ import annotations

import logging
import warnings

from s3_utils.limits import S3RequestRateWarning, prefix_request_rate_excess

log = logging.getLogger(__name__)


def warn_if_over_request_budget(
    ranks_per_prefix: int, concurrency: int, operation: str, setting: str
) -> None:
    """Log and warn (``S3RequestRateWarning``) if ``ranks_per_prefix`` ranks with ``concurrency``
    requests in flight each can exceed S3's ``operation`` rate on one prefix.

    Args:
        ranks_per_prefix: ranks sending to the busiest prefix.
        concurrency: requests in flight per rank.
        operation: ``"PUT"`` or ``"GET"``.
        setting: the setting to change, named in the message.
    """
    excess = prefix_request_rate_excess(ranks_per_prefix, concurrency, operation)
    if excess is not None:
        message = f"{setting}: {excess}"
        log.warning(message)
        warnings.warn(message, S3RequestRateWarning, stacklevel=3)
