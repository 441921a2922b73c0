"""One exception hierarchy for everything that can go wrong talking to S3.

Each class also inherits the natural built-in, so callers that only know Python's own exceptions still
catch the right thing: a missing object is a ``FileNotFoundError``, refused access a ``PermissionError``,
a bad URL or setting a ``ValueError``, an endpoint that does not answer a ``ConnectionError``.

:func:`translate` turns a botocore exception into one of these, with a message that names the bucket,
key and endpoint and says what to check. Messages never contain credentials.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)


class S3Error(Exception):
    """Base class of every error raised by s3_utils.

    Besides the message, an error carries what a caller needs to decide without another request (as
    ``requests.HTTPError`` carries its response): which operation failed, on which object, and what
    the server answered. Fields the failure did not have (no answer at all, a local check) are None.

    Args:
        message: what went wrong and what to check.
        operation: the S3 operation, e.g. ``"HeadObject"``.
        status: the HTTP status the server answered, e.g. 404.
        code: the S3 error code, e.g. ``"NoSuchKey"`` (``"404"`` for a HEAD, whose answer has no body).
        bucket: the bucket addressed.
        key: the key addressed.

    Attributes:
        operation: as given.
        status: as given.
        code: as given.
        bucket: as given.
        key: as given.
    """

    def __init__(
        self,
        message: str = "",
        *,
        operation: str | None = None,
        status: int | None = None,
        code: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.code = code
        self.bucket = bucket
        self.key = key

    def details(self) -> dict[str, Any]:
        """The attributes as keyword arguments, to build a related error that keeps them."""
        return {
            "operation": self.operation,
            "status": self.status,
            "code": self.code,
            "bucket": self.bucket,
            "key": self.key,
        }


class S3NotFoundError(S3Error, FileNotFoundError):
    """The bucket or the object does not exist."""


class S3AccessDeniedError(S3Error, PermissionError):
    """Access refused: missing or wrong credentials, or a policy that does not allow the call."""


class S3ConfigError(S3Error, ValueError):
    """A bad URL or configuration value; nothing was sent, or the server rejected the request's form."""


class S3EndpointError(S3Error, ConnectionError):
    """The endpoint does not answer (refused, unreachable, DNS failure, connect timeout)."""


class S3IntegrityError(S3Error):
    """What arrived does not match what was stored: checksum mismatch or a truncated object."""


class S3ObjectChangedError(S3Error):
    """The object was overwritten (its ETag changed) while a ranged download was reading it."""


class S3TransferError(S3Error):
    """A request kept failing with transient errors until the retry budget ran out."""


_NOT_FOUND_BUCKET = {"NoSuchBucket"}
_NOT_FOUND_KEY = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_CHANGED = {"PreconditionFailed", "412"}
_BAD_REQUEST = {"InvalidBucketName", "KeyTooLongError", "InvalidArgument", "InvalidRange", "EntityTooSmall"}


def describe(bucket: str | None, key: str | None) -> str:
    """``s3://bucket/key`` (or ``s3://bucket``) for messages."""
    if not bucket:
        return "S3"
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (None for anything else)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def translate(
    exc: BaseException,
    *,
    operation: str,
    bucket: str | None,
    key: str | None,
    endpoint: str,
) -> S3Error:
    """Turn a botocore (or socket) exception into the matching :class:`S3Error`.

    Args:
        exc: what botocore raised.
        operation: the S3 operation that failed, e.g. ``"GetObject"``.
        bucket: the bucket the request addressed, if any.
        key: the key the request addressed, if any.
        endpoint: the endpoint URL (or ``"AWS default"``), named in the message.

    Returns:
        The translated error; the caller raises it ``from exc``. An :class:`S3Error` is returned as is.
    """
    if isinstance(exc, S3Error):
        return exc
    code = error_code(exc)
    status = http_status(exc)
    details: dict[str, Any] = {
        "operation": operation,
        "status": status,
        "code": code or None,
        "bucket": bucket,
        "key": key,
    }
    where = describe(bucket, key)
    at = f"{where} at {endpoint}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return S3AccessDeniedError(
            f"{operation} {at}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or pass them in S3ClientConfig",
            **details,
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return S3EndpointError(
            f"{operation} {where}: could not connect to the S3 endpoint {endpoint}; check that the "
            "server is running and that endpoint_url / AWS_ENDPOINT_URL is right",
            **details,
        )
    if code in _NOT_FOUND_BUCKET:
        return S3NotFoundError(
            f"{operation} {at}: bucket {bucket!r} does not exist; check the bucket name and the endpoint",
            **details,
        )
    if code in _NOT_FOUND_KEY:
        return S3NotFoundError(f"{operation} {at}: no such object; check the key (and the bucket)", **details)
    if code in _BAD_CREDENTIALS:
        hint = (
            "the secret access key is wrong"
            if code == "SignatureDoesNotMatch"
            else "the access key id is unknown or the session token expired"
        )
        return S3AccessDeniedError(
            f"{operation} {at}: credentials rejected ({code}): {hint}; check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY / AWS_PROFILE",
            **details,
        )
    if code in {"403", "Forbidden"}:  # a HEAD's answer has no body, so no reason either
        return S3AccessDeniedError(
            f"{operation} {at}: access denied (HTTP 403, no reason given): check the credentials "
            f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and that their policy allows "
            f"s3:{operation} on this bucket and key",
            **details,
        )
    if code in _DENIED:
        return S3AccessDeniedError(
            f"{operation} {at}: access denied; check that the credentials' policy allows "
            f"s3:{operation} on this bucket and key",
            **details,
        )
    if code in _CHANGED:
        return S3ObjectChangedError(
            f"{operation} {at}: the object changed (ETag no longer matches) during the transfer; "
            "it was overwritten by another writer, so retry the whole read",
            **details,
        )
    if code in _BAD_REQUEST:
        return S3ConfigError(f"{operation} {at}: the server rejected the request ({code}): {exc}", **details)
    return S3Error(f"{operation} {at} failed: {type(exc).__name__}: {exc}", **details)
