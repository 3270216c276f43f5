"""The batch producer against moto, through the fault-injecting proxy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from exportpipe.common.errors import AwsTransientError
from exportpipe.common.producer import BatchProducer, SendFailed
from exportpipe.common.schemas import (
    DownloadJob,
    ExportRequested,
    S3Destination,
    decode,
    job_id_for,
)
from exportpipe.common.tenancy import group_id_for
from exportpipe.testing import Fault, FaultProxy, Request


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=moto_server) as p:
        yield p


def _drain(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def test_sends_in_batches_of_ten(sqs: Any, queue_pair: tuple[str, str], proxy: FaultProxy) -> None:
    client = boto3.client("sqs", endpoint_url=proxy.endpoint)
    producer = BatchProducer(client, queue_pair[0], max_concurrency=3)
    messages = [ExportRequested(export_id=f"e{i}") for i in range(95)]
    assert producer.send(messages) == 95
    producer.close()
    assert proxy.counts["SendMessageBatch"] == 10
    assert producer.requests == 10
    bodies = _drain(sqs, queue_pair[0])
    assert len(bodies) == 95
    assert len(set(bodies)) == 95


def test_retries_only_failed_entries(
    sqs: Any, queue_pair: tuple[str, str], proxy: FaultProxy
) -> None:
    calls: list[int] = []

    def fail_three_first_time(request: Request) -> Fault | None:
        if request.operation != "SendMessageBatch":
            return None
        calls.append(1)
        return Fault(fail_batch_entries=3) if len(calls) == 1 else None

    proxy.rules.append(fail_three_first_time)
    client = boto3.client("sqs", endpoint_url=proxy.endpoint)
    producer = BatchProducer(client, queue_pair[0], max_concurrency=1)
    assert producer.send(ExportRequested(export_id=f"e{i}") for i in range(10)) == 10
    assert producer.requests == 2  # one batch, one retry of the three that failed
    assert proxy.faults["batch_partial_failure"] == 1
    bodies = _drain(sqs, queue_pair[0])
    assert sorted(bodies) == sorted(set(bodies))  # no duplicates
    assert len(bodies) == 10


def test_gives_up_after_persistent_failures(queue_pair: tuple[str, str], proxy: FaultProxy) -> None:
    proxy.rules.append(
        lambda r: Fault(fail_batch_entries=1) if r.operation == "SendMessageBatch" else None
    )
    client = boto3.client("sqs", endpoint_url=proxy.endpoint)
    producer = BatchProducer(client, queue_pair[0], max_attempts=3)
    with pytest.raises(AwsTransientError, match="still failing after 3 attempts"):
        producer.send([ExportRequested(export_id="e1")])


def test_throttled_batch_call_is_retried(
    sqs: Any, queue_pair: tuple[str, str], proxy: FaultProxy
) -> None:
    seen: list[int] = []

    def throttle_twice(request: Request) -> Fault | None:
        if request.operation == "SendMessageBatch":
            seen.append(1)
            if len(seen) <= 2:
                return Fault(status=400, error_code="ThrottlingException")
        return None

    proxy.rules.append(throttle_twice)
    client = boto3.client("sqs", endpoint_url=proxy.endpoint)
    assert BatchProducer(client, queue_pair[0]).send([ExportRequested(export_id="e1")]) == 1
    assert len(_drain(sqs, queue_pair[0])) == 1


def test_sender_fault_is_permanent(sqs: Any, queue_pair: tuple[str, str]) -> None:
    producer = BatchProducer(sqs, queue_pair[0])
    with pytest.raises(SendFailed):
        producer.send_bodies(["x" * (1024 * 1024 + 1)])


def _groups(sqs: Any, url: str) -> dict[str, str | None]:
    """Body -> MessageGroupId of everything on ``url`` (received and deleted)."""
    found: dict[str, str | None] = {}
    while True:
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
        ).get("Messages", [])
        if not got:
            return found
        for m in got:
            found[m["Body"]] = m.get("Attributes", {}).get("MessageGroupId")
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def test_every_job_carries_its_tenant_as_message_group(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    destination = S3Destination(bucket="bucket", prefix="exports/e/")

    def job(export_id: str, tenant: str | None, n: int) -> DownloadJob:
        return DownloadJob(
            job_id=job_id_for(export_id, f"f{n}"),
            export_id=export_id,
            file_id=f"f{n}",
            file_name=f"f{n}.jsonl",
            url=f"https://files.example.com/{n}",
            destination=destination,
            tenant=tenant,
        )

    long_tenant = "t" * 128  # the longest id the schemas' rule allows
    jobs = [
        *(job("whale-export", "whale", n) for n in range(15)),
        *(job("small-export", None, n) for n in range(3)),
        job("long-export", long_tenant, 0),
    ]
    producer = BatchProducer(sqs, queue_pair[0])
    assert producer.send(jobs) == len(jobs)
    producer.close()

    groups = _groups(sqs, queue_pair[0])
    by_export: dict[str, set[str | None]] = {}
    for body, group in groups.items():
        by_export.setdefault(decode(body, DownloadJob).export_id, set()).add(group)
    assert by_export["whale-export"] == {"whale"}
    assert by_export["small-export"] == {"small-export"}  # no tenant: the export id
    (long_group,) = by_export["long-export"]
    assert long_group == group_id_for("long-export", long_tenant)
    assert long_group is not None
    assert len(long_group) == 128


def test_requests_carry_their_group_and_plain_bodies_none(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    producer = BatchProducer(sqs, queue_pair[0])
    producer.send([ExportRequested(export_id="e1", tenant="acme"), ExportRequested(export_id="e2")])
    producer.send_bodies(["plain"])
    producer.send_bodies(["grouped"], group_id="g-1")
    producer.close()
    groups = _groups(sqs, queue_pair[0])
    by_id = {
        (decode(b, ExportRequested).export_id if b.startswith("{") else b): g
        for b, g in groups.items()
    }
    assert by_id == {"e1": "acme", "e2": "e2", "plain": None, "grouped": "g-1"}
