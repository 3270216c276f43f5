"""Fair queues: every job and continuation the orchestrator sends names its tenant."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from exportpipe.common.schemas import DownloadJob, ExportRequested, decode
from exportpipe.tools.simulator import ExportSpec

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.slow


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        if not messages:
            return got
        got += messages
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


@pytest.mark.parametrize(("tenant", "group"), [("acme", "acme"), (None, "exp-fair")])
def test_jobs_and_continuation_carry_the_tenant_group(
    stack: Stack, tenant: str | None, group: str
) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-fair", 15))  # page size 10: two pages
    orchestrator = stack.direct_handler()
    try:
        orchestrator.handler(stack.context(ExportRequested(export_id="exp-fair", tenant=tenant)))
    finally:
        orchestrator.close()

    jobs = _receive(stack.sqs, stack.settings.jobs_queue_url)
    assert len(jobs) == 10
    assert {m["Attributes"]["MessageGroupId"] for m in jobs} == {group}
    assert {decode(m["Body"], DownloadJob).tenant for m in jobs} == {tenant}
    (continuation,) = _receive(stack.sqs, stack.settings.requests_queue_url)
    assert continuation["Attributes"]["MessageGroupId"] == group
    assert decode(continuation["Body"], ExportRequested).page == 1


def test_not_ready_recheck_keeps_the_group(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-later", 3, pending_polls=1))
    orchestrator = stack.direct_handler()
    try:
        orchestrator.handler(stack.context(ExportRequested(export_id="exp-later", tenant="t-9")))
    finally:
        orchestrator.close()
    time.sleep(1.2)  # the re-check is sent with a 1 s delay
    (recheck,) = _receive(stack.sqs, stack.settings.requests_queue_url)
    assert recheck["Attributes"]["MessageGroupId"] == "t-9"
    assert decode(recheck["Body"], ExportRequested).not_ready_checks == 1
