"""Retries for AWS calls: one layer, the client's own.

Every client comes from :func:`aws_client`, configured with botocore's ``standard``
retry mode (jittered exponential backoff on throttling, 5xx and connection errors) for
:data:`AWS_MAX_ATTEMPTS` attempts. :func:`call_aws` adds no retries of its own: it only
turns what outlived them into :class:`~exportpipe.common.errors.AwsTransientError`,
which the queue runtime retries later. The only loop left is for what botocore cannot
see, entries a batch call reports as failed: :func:`retry_unfinished`.

:func:`parse_retry_after` reads the HTTP ``Retry-After`` header for both services'
HTTP clients (the orchestrator's Export API client and the worker's downloads).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from exportpipe.common.errors import AwsTransientError

__all__ = [
    "AWS_MAX_ATTEMPTS",
    "aws_client",
    "aws_error_code",
    "call_aws",
    "call_aws_pages",
    "get_object_or_none",
    "is_transient_aws_error",
    "parse_retry_after",
    "retry_unfinished",
]

T = TypeVar("T")
V = TypeVar("V")

AWS_MAX_ATTEMPTS = 6
"""Attempts per AWS call (botocore's ``standard`` retry mode): the one retry layer."""
_log = logging.getLogger("exportpipe.retry")

_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "KMS.ThrottlingException",
        "AWS.SimpleQueueService.ServiceUnavailable",
    }
)


def aws_error_code(exc: BaseException) -> str:
    """The AWS error code of a :class:`ClientError` (``""`` for any other exception)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_transient_aws_error(exc: BaseException) -> bool:
    """True for throttling, 5xx and connection-level failures worth retrying."""
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return aws_error_code(exc) in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def call_aws(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``; a transient failure becomes :class:`AwsTransientError`.

    The client's own retry mode (see :func:`aws_client`) is the only retry layer, so a
    transient failure seen here has already outlived it: the caller's message is
    retried later by the queue instead of being held here.

    Raises:
        AwsTransientError: a throttling, 5xx or connection failure.
        botocore.exceptions.ClientError: a non-transient AWS error.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if is_transient_aws_error(exc):
            _log.warning(
                "AWS call failed after the client's retries",
                extra={"error": type(exc).__name__, "code": aws_error_code(exc)},
            )
            raise AwsTransientError(f"AWS call kept failing: {type(exc).__name__}") from exc
        raise


def call_aws_pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every page of ``operation`` through the client's paginator, each request as
    :func:`call_aws` makes it (a transient failure becomes :class:`AwsTransientError`)."""
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    while (page := call_aws(next, pages, None)) is not None:
        yield page


def get_object_or_none(s3: Any, bucket: str, key: str) -> bytes | None:
    """The body of object ``key`` (read through :func:`call_aws`); ``None`` if it is absent."""
    try:
        body: bytes = call_aws(s3.get_object, Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if aws_error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    return body


def retry_unfinished(
    attempt: Callable[[dict[str, V]], dict[str, V]],
    pending: dict[str, V],
    *,
    what: str,
    attempts: int = 8,
) -> None:
    """Retry the entries a batch call reports as failed, with backoff, until none are left.

    The one loop beside the clients' retries: a batch call (SendMessageBatch,
    DeleteMessageBatch, ChangeMessageVisibilityBatch) answers 200 with some entries
    failed, which botocore cannot see. ``attempt`` sends ``pending`` (entry id → entry)
    and returns the entries to try again; it raises for failures retrying cannot fix.

    Raises:
        AwsTransientError: entries still failing after ``attempts`` calls.
    """
    for number in range(attempts):
        pending = attempt(pending)
        if not pending:
            return
        if number + 1 < attempts:
            time.sleep(random.uniform(0.5, 1.0) * min(5.0, 0.1 * 2**number))  # noqa: S311
    raise AwsTransientError(f"{len(pending)} {what} still failing after {attempts} attempts")


def aws_client(service: str, *, max_pool_connections: int = 20) -> Any:
    """A boto3 client with sane timeouts and botocore's standard retry mode.

    The endpoint comes from the standard ``AWS_ENDPOINT_URL`` (boto3 reads it), so the
    same code talks to AWS or to the local moto server.
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=60,  # must exceed the 20 s long poll
    )
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def parse_retry_after(
    value: str | None, *, now: datetime | float | None = None, cap: float | None = None
) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP-date).

    Returns ``None`` for a missing or unparseable value (NaN, or infinity without a
    ``cap``); a negative delay or a date in the past gives 0. With ``cap`` the result is
    at most ``cap``: a hostile header must not park a message, nor every call of a
    process, for hours.

    Args:
        now: the current time for an HTTP-date (a datetime or POSIX seconds; default now).
    """
    text = (value or "").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if isinstance(now, datetime):
            now = now.timestamp()
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or (cap is None and math.isinf(seconds)):
        return None
    return max(0.0, seconds if cap is None else min(seconds, cap))
