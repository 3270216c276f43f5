"""One retry layer per AWS call: the client's, plus a loop only for failed batch entries."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config

from exportpipe.common.errors import AwsTransientError
from exportpipe.common.retry import (
    AWS_MAX_ATTEMPTS,
    aws_client,
    call_aws,
    call_aws_pages,
    retry_unfinished,
)
from exportpipe.testing import Fault, FaultProxy, Request


def test_clients_retry_in_standard_mode_for_the_configured_attempts(moto_server: str) -> None:
    retries = aws_client("sqs").meta.config.retries
    assert retries == {"mode": "standard", "total_max_attempts": AWS_MAX_ATTEMPTS}


def _client(service: str, proxy: FaultProxy, *, attempts: int) -> Any:
    """A client through ``proxy`` making at most ``attempts`` HTTP attempts per call."""
    return boto3.client(
        service,
        endpoint_url=proxy.endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def test_call_aws_adds_no_attempts_to_the_clients_own(moto_server: str) -> None:
    def always_503(request: Request) -> Fault | None:
        return (
            Fault(status=503, error_code="ServiceUnavailable")
            if "ListQueues" in (request.operation)
            else None
        )

    with FaultProxy(moto_server, rules=[always_503]) as proxy:
        client = _client("sqs", proxy, attempts=2)
        with pytest.raises(AwsTransientError, match="kept failing"):
            call_aws(client.list_queues)
        # Two HTTP attempts for one logical call: the client's, and no more.
        assert proxy.counts["ListQueues"] == 2


def test_non_transient_errors_pass_through_at_once(moto_server: str) -> None:
    client = boto3.client("sqs", endpoint_url=moto_server)
    with pytest.raises(client.exceptions.QueueDoesNotExist):
        call_aws(client.get_queue_url, QueueName="no-such-queue-anywhere")


def test_call_aws_pages_walks_every_page(s3: Any, bucket: str) -> None:
    for n in range(5):
        s3.put_object(Bucket=bucket, Key=f"pages/{n}", Body=b"x")
    pages = list(
        call_aws_pages(
            s3, "list_objects_v2", Bucket=bucket, Prefix="pages/", PaginationConfig={"PageSize": 2}
        )
    )
    assert len(pages) == 3
    assert [o["Key"] for p in pages for o in p["Contents"]] == [f"pages/{n}" for n in range(5)]


def test_call_aws_pages_maps_a_transient_failure(moto_server: str) -> None:
    def second_page_503(request: Request) -> Fault | None:
        return (
            Fault(status=503, error_code="SlowDown")
            if "continuation-token" in request.path
            else None
        )

    with FaultProxy(moto_server, rules=[second_page_503]) as proxy:
        client = _client("s3", proxy, attempts=1)
        client.create_bucket(Bucket="pages-fault")
        for n in range(3):
            client.put_object(Bucket="pages-fault", Key=str(n), Body=b"x")
        pages = call_aws_pages(
            client, "list_objects_v2", Bucket="pages-fault", PaginationConfig={"PageSize": 2}
        )
        assert len(next(pages)["Contents"]) == 2
        # A page that keeps failing ends the walk with the named error, not a short list.
        with pytest.raises(AwsTransientError):
            next(pages)


def test_retry_unfinished_resends_only_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exportpipe.common.retry.time.sleep", lambda _s: None)
    calls: list[list[str]] = []

    def attempt(pending: dict[str, Any]) -> dict[str, Any]:
        calls.append(sorted(pending))
        return {k: v for k, v in pending.items() if k == "b" and len(calls) < 3}

    retry_unfinished(attempt, {"a": 1, "b": 2, "c": 3}, what="entries")
    assert calls == [["a", "b", "c"], ["b"], ["b"]]


def test_retry_unfinished_gives_up_as_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exportpipe.common.retry.time.sleep", lambda _s: None)
    with pytest.raises(AwsTransientError, match="1 entries still failing after 3 attempts"):
        retry_unfinished(lambda pending: pending, {"a": 1}, what="entries", attempts=3)
