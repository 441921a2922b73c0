"""Retry policy, per request: a failed part or range is sent again alone, never the whole transfer.

Transient failures (throttling, 5xx, request timeouts, connections reset or cut mid-body, read
timeouts of a stalled request) are retried with exponential backoff and full jitter, bounded by time
(``retry_total_s``, minutes by default), not by a count: a storm of 503 SlowDown or an outage of a few
tens of seconds slows a save or a load down but does not fail it. Everything else (missing bucket or
key, refused access, bad credentials, a changed object) is raised at once.

A refused or timed-out connection is told apart by history: an endpoint that has never answered this
process (a wrong ``endpoint_url`` at start-up, a server that is not running) gets ``connect_attempts``
tries and fails within about a second with :class:`S3EndpointError`; one that has answered before (a
DNS or load-balancer blip, a restarting server) gets the full time budget like any transient failure.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from s3_utils.config import TransferConfig
from s3_utils.errors import (
    S3EndpointError,
    S3Error,
    S3IntegrityError,
    S3TransferError,
    describe,
    error_code,
    http_status,
    translate,
)
from s3_utils.limits import RequestClass, request_class
from s3_utils.request_rate import process_limiter, request_prefix
from s3_utils.stats import StatsRecorder

logger = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"}
)
"""Error codes by which S3 says a request was refused for the request rate."""
THROTTLING_STATUS = frozenset({429, 503})
TRANSIENT_CODES = THROTTLING_CODES | frozenset(
    {
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
        "500",
        "502",
        "503",
        "504",
    }
)
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class TruncatedBodyError(S3IntegrityError):
    """A response body ended before its Content-Length (a cut connection); retried."""


_TRANSIENT_TYPES = (
    HTTPClientError,  # connection closed, read timeout, response streaming error
    IncompleteReadError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    http.client.IncompleteRead,
    ConnectionError,  # reset / aborted / broken pipe from the socket layer
    TimeoutError,
    TruncatedBodyError,
)
_CONNECT_TYPES = (EndpointConnectionError, ConnectTimeoutError)


_answered_lock = threading.Lock()
_answered_endpoints: set[str] = set()


def endpoint_answered(endpoint: str) -> bool:
    """Whether ``endpoint`` has answered any request of this process (an error answer counts)."""
    with _answered_lock:
        return endpoint in _answered_endpoints


def _mark_answered(endpoint: str) -> None:
    if endpoint not in _answered_endpoints:  # a racy read is fine: the set only grows
        with _answered_lock:
            _answered_endpoints.add(endpoint)


def is_connect_failure(exc: BaseException) -> bool:
    """True if no connection could be made at all (refused, unreachable, connect timeout)."""
    return isinstance(exc, _CONNECT_TYPES)


def is_throttling(exc: BaseException) -> bool:
    """True if S3 refused the request for the request rate (503 SlowDown, 429 and the like)."""
    return error_code(exc) in THROTTLING_CODES or http_status(exc) in THROTTLING_STATUS


def is_transient(exc: BaseException) -> bool:
    """True if sending the same request again may succeed."""
    if isinstance(exc, S3Error):
        return isinstance(exc, TruncatedBodyError)
    if isinstance(exc, ClientError):
        return error_code(exc) in TRANSIENT_CODES or http_status(exc) in TRANSIENT_STATUS
    return is_connect_failure(exc) or isinstance(exc, _TRANSIENT_TYPES)


class Requester:
    """Sends one request with the retry policy of a :class:`TransferConfig`, and translates failures.

    Args:
        config: time budget, backoff and optional attempt cap.
        endpoint: the endpoint, named in error messages and remembered once it answers.
    """

    def __init__(self, config: TransferConfig, endpoint: str) -> None:
        self._config = config
        self._endpoint = endpoint
        self._budget = stop_before_delay(config.retry_total_s)
        self._buckets_seen: set[str] = set()
        self._limiter = process_limiter() if config.adaptive_request_rate else None

    def bucket_seen(self, bucket: str) -> bool:
        """Whether a request addressing ``bucket`` has succeeded through this requester (so it exists)."""
        return bucket in self._buckets_seen

    def _stop(self, state: RetryCallState) -> bool:
        config = self._config
        exc = state.outcome.exception() if state.outcome is not None else None
        if (
            exc is not None
            and is_connect_failure(exc)
            and not endpoint_answered(self._endpoint)
            and state.attempt_number >= config.connect_attempts
        ):
            return True
        if config.max_attempts is not None and state.attempt_number >= config.max_attempts:
            return True
        return bool(self._budget(state))

    def call(
        self,
        fn: Callable[[], T],
        *,
        operation: str,
        bucket: str | None,
        key: str | None,
        stats: StatsRecorder | None = None,
    ) -> T:
        """Call ``fn`` (one S3 request), retrying transient failures.

        Args:
            fn: sends the request and consumes its answer (a body read belongs inside, so a connection
                cut mid-body is retried too).
            operation: the S3 operation name, for messages.
            bucket: the bucket addressed, for messages.
            key: the key addressed, for messages.
            stats: counts requests and retries, if given.

        Returns:
            What ``fn`` returned.

        Raises:
            S3Error: the translated failure; :class:`S3TransferError` when transient failures used up the
                retry budget, :class:`S3EndpointError` when the endpoint never answered.
        """
        started = time.monotonic()
        rate_class = request_class(operation) if self._limiter is not None else None
        rated = (request_prefix(bucket, key), rate_class) if rate_class is not None else None

        def attempt() -> T:
            return self._attempt(fn, bucket=bucket, rated=rated, stats=stats)

        def before_sleep(state: RetryCallState) -> None:
            if stats is not None:
                stats.retry()
            exc = state.outcome.exception() if state.outcome is not None else None
            logger.info(
                "retrying %s %s after %s (attempt %d failed, %.0fs of %gs spent), sleeping %.2fs",
                operation,
                describe(bucket, key),
                _short(exc),
                state.attempt_number,
                time.monotonic() - started,
                self._config.retry_total_s,
                state.upcoming_sleep,
            )

        retrying = Retrying(
            stop=self._stop,
            wait=wait_random_exponential(
                multiplier=self._config.retry_base_delay_s, max=self._config.retry_max_delay_s
            ),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            attempts = int(retrying.statistics.get("attempt_number", 1))
            raise self._final_error(
                exc, operation=operation, bucket=bucket, key=key, attempts=attempts, started=started
            ) from exc

    def _attempt(
        self,
        fn: Callable[[], T],
        *,
        bucket: str | None,
        rated: tuple[str, RequestClass] | None,
        stats: StatsRecorder | None,
    ) -> T:
        """One attempt of ``fn``, within the request rate of its prefix when ``rated`` names one."""
        limiter = self._limiter if rated is not None else None
        grant = limiter.acquire(*rated) if limiter is not None and rated is not None else None
        if stats is not None:
            stats.request()
            if grant is not None and grant.waited_s:
                stats.rate_wait(grant.waited_s)
        try:
            result = fn()
        except ClientError as exc:
            _mark_answered(self._endpoint)
            if limiter is not None and grant is not None:
                if is_throttling(exc):
                    limiter.throttled(grant)
                    if stats is not None:
                        stats.throttled()
                else:
                    limiter.succeeded(grant)  # answered, not refused: the rate was fine
            raise
        _mark_answered(self._endpoint)
        if limiter is not None and grant is not None:
            limiter.succeeded(grant)
        if bucket is not None:
            self._buckets_seen.add(bucket)
        return result

    def _final_error(
        self,
        exc: Exception,
        *,
        operation: str,
        bucket: str | None,
        key: str | None,
        attempts: int,
        started: float,
    ) -> S3Error:
        elapsed = time.monotonic() - started
        if is_connect_failure(exc) or not is_transient(exc):
            error = translate(exc, operation=operation, bucket=bucket, key=key, endpoint=self._endpoint)
            if isinstance(error, S3EndpointError) and attempts > 1:
                message = f"{error} (tried {attempts} times over {elapsed:.1f}s)"
                return S3EndpointError(message, **error.details())
            return error
        return S3TransferError(
            f"{operation} {describe(bucket, key)} at {self._endpoint} failed {attempts} times over "
            f"{elapsed:.1f}s with transient errors, last: {_short(exc)}; the server is "
            "overloaded or the network unstable: retry later, or lower max_concurrency / raise "
            "retry_total_s",
            operation=operation,
            status=http_status(exc),
            code=error_code(exc) or None,
            bucket=bucket,
            key=key,
        )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    code = error_code(exc)
    return f"{code} ({http_status(exc)})" if code else f"{type(exc).__name__}: {exc}"
