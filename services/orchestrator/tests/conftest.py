"""Fixtures: the Export API simulator on a real socket, moto SQS, a running orchestrator."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.schemas import DownloadJob, ExportRequested, decode, encode
from exportpipe.common.sqs import JobContext, queue_depth
from exportpipe.orchestrator.__main__ import Orchestrator, build, consumer_config
from exportpipe.orchestrator.settings import OrchestratorSettings
from exportpipe.testing import create_queue_pair
from exportpipe.tools.simulator import SimulatorServer

TOKEN = "sim-secret-token"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, every: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


@dataclasses.dataclass
class Stack:
    """One test's simulator, queues and settings, with helpers to drive and observe them."""

    sim: SimulatorServer
    sqs: Any
    settings: OrchestratorSettings
    jobs_dlq_url: str
    metrics: Metrics = dataclasses.field(
        default_factory=lambda: Metrics(namespace="Test", service="orchestrator")
    )
    collected: list[DownloadJob] = dataclasses.field(default_factory=list)

    def with_settings(self, **changes: Any) -> Stack:
        self.settings = OrchestratorSettings(**{**self.settings.model_dump(), **changes})
        return self

    def submit(self, export_id: str, **fields: Any) -> None:
        body = encode(ExportRequested(export_id=export_id, **fields))
        self.sqs.send_message(QueueUrl=self.settings.requests_queue_url, MessageBody=body)

    def build(self, **overrides: Any) -> Orchestrator:
        config = dataclasses.replace(
            consumer_config(self.settings), retry_base_seconds=1.0, retry_max_seconds=2.0
        )
        return build(
            self.settings,
            sqs=self.sqs,
            logger=get_logger("orchestrator", level="WARNING"),
            metrics=self.metrics,
            config=config,
            **overrides,
        )

    @contextmanager
    def running(self, **overrides: Any) -> Iterator[Orchestrator]:
        """An orchestrator consuming SQS 1 in a background thread."""
        orchestrator = self.build(**overrides)
        thread = threading.Thread(target=orchestrator.consumer.run, daemon=True)
        thread.start()
        try:
            yield orchestrator
        finally:
            orchestrator.consumer.shutdown()
            thread.join(timeout=30)
            orchestrator.close()
            assert not thread.is_alive()

    def direct_handler(self, **overrides: Any) -> Orchestrator:
        """A wired orchestrator whose handler tests call themselves (no consumer thread)."""
        return self.build(**overrides)

    def context(self, request: ExportRequested | str) -> JobContext:
        body = request if isinstance(request, str) else encode(request)
        return JobContext(
            message_id=uuid.uuid4().hex,
            receipt_handle="rh",
            body=body,
            receive_count=1,
            attributes={},
        )

    def drain_jobs(self) -> list[DownloadJob]:
        """Receive and delete what is on SQS 2 now; also kept in ``collected``."""
        got: list[DownloadJob] = []
        while True:
            response = self.sqs.receive_message(
                QueueUrl=self.settings.jobs_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = response.get("Messages", [])
            if not messages:
                break
            got.extend(decode(m["Body"], DownloadJob) for m in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.settings.jobs_queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        self.collected.extend(got)
        return got

    def collect_until(self, job_ids: set[str], timeout: float = 30.0) -> list[DownloadJob]:
        """Drain SQS 2 until every id in ``job_ids`` has been seen."""

        def done() -> bool:
            self.drain_jobs()
            return job_ids <= {j.job_id for j in self.collected}

        wait_until(done, timeout=timeout, every=0.2)
        return self.collected

    def queue_depth(self, url: str) -> int:
        return queue_depth(self.sqs, url).total

    def requests_idle(self) -> bool:
        return self.queue_depth(self.settings.requests_queue_url) == 0

    def dead_letters(self, timeout: float = 20.0, count: int = 1) -> list[dict[str, Any]]:
        """Wait for ``count`` messages on SQS 1's DLQ and return them (with attributes)."""
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            response = self.sqs.receive_message(
                QueueUrl=self.settings.requests_dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
                VisibilityTimeout=60,
            )
            found.extend(response.get("Messages", []))
            return len(found) >= count

        wait_until(arrived, timeout=timeout, every=0.2)
        return found


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    """:func:`wait_until`, for test modules (conftest is not importable under importlib)."""
    return wait_until


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def stack(sim: SimulatorServer, sqs: Any, s3: Any) -> Stack:
    name = f"orch-{uuid.uuid4().hex[:10]}"
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="exports-bucket")  # rejection records of refused entries
    requests_url, requests_dlq = create_queue_pair(sqs, f"{name}-req", visibility_timeout=10)
    jobs_url, jobs_dlq = create_queue_pair(sqs, f"{name}-jobs")
    settings = OrchestratorSettings(
        bucket="exports-bucket",
        requests_queue_url=requests_url,
        requests_dlq_url=requests_dlq,
        jobs_queue_url=jobs_url,
        export_api_url=sim.url,
        export_api_token=TOKEN,  # type: ignore[arg-type]
        page_size=10,
        concurrency=2,
        wait_time_seconds=1,
        visibility_timeout_seconds=10,
        heartbeat_seconds=3,
        shutdown_grace_seconds=2,
        api_retry_attempts=3,
        api_retry_max_wait_seconds=0.1,
        api_read_timeout_seconds=5,
        not_ready_initial_delay_seconds=1,
        not_ready_max_delay_seconds=1,
    )
    return Stack(sim=sim, sqs=sqs, settings=settings, jobs_dlq_url=jobs_dlq)
