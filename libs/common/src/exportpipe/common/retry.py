"""Retries for AWS calls: jittered exponential backoff on throttling and transient errors.

botocore already retries a few times in ``standard`` mode; this layer is the longer,
explicit one around calls whose failure would cost a message (send, delete, visibility).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from exportpipe.common.errors import AwsTransientError

__all__ = ["aws_client", "call_aws", "is_transient_aws_error"]

T = TypeVar("T")
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


def is_transient_aws_error(exc: BaseException) -> bool:
    """True for throttling, 5xx and connection-level failures worth retrying."""
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    # Only the error's class and code: messages may echo request parameters.
    code = ""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
    _log.warning(
        "AWS call failed, retrying",
        extra={"attempt": state.attempt_number, "error": type(exc).__name__, "code": code},
    )


def call_aws(
    fn: Callable[..., T], /, *args: Any, attempts: int = 6, max_wait: float = 10.0, **kwargs: Any
) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient AWS failures.

    Raises:
        AwsTransientError: still failing transiently after ``attempts`` tries.
        botocore.exceptions.ClientError: a non-transient AWS error (raised at once).
    """
    retrying = Retrying(
        retry=retry_if_exception(is_transient_aws_error),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=max_wait, jitter=0.2),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except Exception as exc:
        if is_transient_aws_error(exc):
            raise AwsTransientError(f"AWS call kept failing: {type(exc).__name__}") from exc
        raise


def aws_client(service: str, *, max_pool_connections: int = 20) -> Any:
    """A boto3 client with sane timeouts and botocore's standard retry mode.

    The endpoint comes from the standard ``AWS_ENDPOINT_URL`` (boto3 reads it), so the
    same code talks to AWS or to the local moto server.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=60,  # must exceed the 20 s long poll
    )
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
