"""The SQS 2 handler records each file's outcome once and completes the export."""

from __future__ import annotations

import gzip
import uuid
from typing import Any

import boto3
import orjson
import pytest

from exportpipe.common.completion import EventPublisher, ExportCompleter, Tracking
from exportpipe.common.errors import IntegrityError, UpstreamUnavailable
from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.schemas import encode
from exportpipe.common.sqs import JobContext
from exportpipe.common.tracking import ExportTracker
from exportpipe.worker.handler import JobHandler
from exportpipe.worker.pipeline import Pipeline
from exportpipe.worker.settings import WorkerSettings


@pytest.fixture
def tracking(moto_server: str, s3: Any) -> Tracking:
    tracker = ExportTracker(boto3.client("dynamodb"), f"t-{uuid.uuid4().hex[:8]}")
    tracker.create_table()
    return Tracking(tracker, ExportCompleter(tracker, s3, EventPublisher()))


def _ctx(body: str) -> JobContext:
    return JobContext(
        message_id="m1", receipt_handle="r1", body=body, receive_count=1, attributes={}
    )


def test_outcomes_are_counted_once_and_the_export_completes(
    settings: WorkerSettings, s3: Any, file_server: Any, make_job: Any, tracking: Tracking
) -> None:
    good = gzip.compress(b'{"a": 1}\n{"a": 2}\n')
    bad = gzip.compress(b'{"a": 1}\n')
    export_id = f"exp-{uuid.uuid4().hex[:8]}"
    jobs = [
        make_job(file_server.add(good), body=good, export_id=export_id, file_id="f-good"),
        make_job(
            file_server.add(bad),
            export_id=export_id,
            file_id="f-bad",
            size_bytes=len(bad),
            sha256="0" * 64,
        ),
    ]
    tracking.tracker.record_page(
        export_id, 0, 2, is_last=True, bucket=settings.bucket, prefix=f"exports/{export_id}/"
    )
    metrics = Metrics(namespace="ExportPipe", service="test")
    handler = JobHandler(
        Pipeline(settings, s3=s3, logger=get_logger("test")),
        logger=get_logger("test"),
        metrics=metrics,
        tracking=tracking,
    )
    handler(_ctx(encode(jobs[0])))
    handler(_ctx(encode(jobs[0])))  # redelivery: a duplicate, counted once
    with pytest.raises(IntegrityError):
        handler(_ctx(encode(jobs[1])))

    state = tracking.tracker.get(export_id)
    assert state is not None
    assert (state.files_done, state.files_rejected, state.files_outstanding) == (1, 1, 0)
    assert state.bytes == len(good)
    assert state.status == "completed_with_errors"
    manifest = orjson.loads(
        s3.get_object(Bucket=settings.bucket, Key=f"exports/{export_id}/_manifest.json")[
            "Body"
        ].read()
    )
    assert [f["file_id"] for f in manifest["files"]] == ["f-good"]
    assert manifest["rejected"][0]["file_id"] == "f-bad"
    assert manifest["rejected"][0]["reason"].startswith("sha256_mismatch: ")


def test_job_cost_is_small_for_a_small_file_and_the_worst_case_when_unknown(
    settings: WorkerSettings, make_job: Any
) -> None:
    from exportpipe.worker.handler import job_cost

    memory = settings.job_memory()
    cost = job_cost(memory)
    small = make_job("http://localhost/x", body=gzip.compress(b"{}\n" * 100))
    unknown = small.model_copy(update={"size_bytes": None})
    assert cost(_ctx(encode(small))) == memory.need(small.size_bytes)
    assert cost(_ctx(encode(unknown))) == memory.need(None)
    assert cost(_ctx("not json")) == memory.need(None)
    assert cost(_ctx(encode(small))) < memory.need(None) / 2


def test_worker_defaults_are_the_deployments_job_memory_and_budget() -> None:
    """The sizing module's rule (CDK, planner) and the worker's admission agree."""
    from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

    defaults = WorkerSettings(jobs_queue_url="q", jobs_dlq_url="d", bucket="out-bucket")
    assert defaults.job_memory() == DEFAULT_DEPLOYMENT.worker.job_memory
    assert defaults.job_budget_bytes == DEFAULT_DEPLOYMENT.worker.job_budget_bytes
    assert defaults.concurrency == DEFAULT_DEPLOYMENT.worker.concurrency
    # Large or unknown files: four per task, as before budgets; small ones: many more.
    assert DEFAULT_DEPLOYMENT.worker.jobs_per_task(None) == 4
    assert DEFAULT_DEPLOYMENT.worker.jobs_per_task(10 * 1024) > 4 * 4


@pytest.mark.parametrize("final", [False, True], ids=["retried", "last-delivery"])
def test_a_retryable_failure_on_the_last_delivery_is_recorded_as_final(
    *,
    settings: WorkerSettings,
    s3: Any,
    file_server: Any,
    make_job: Any,
    tracking: Tracking,
    final: bool,
) -> None:
    body = gzip.compress(b'{"a": 1}\n')
    job = make_job(file_server.add(status=503), body=body)
    root = f"exports/{job.export_id}/"
    tracking.tracker.record_page(
        job.export_id, 0, [job.file_id], is_last=True, bucket=settings.bucket, prefix=root
    )
    handler = JobHandler(
        Pipeline(settings, s3=s3, logger=get_logger("test")),
        logger=get_logger("test"),
        metrics=Metrics(namespace="ExportPipe", service="test"),
        tracking=tracking,
    )
    ctx = _ctx(encode(job))
    ctx.final_attempt = final
    with pytest.raises(UpstreamUnavailable):
        handler(ctx)
    state = tracking.tracker.get(job.export_id)
    assert state is not None
    keys = s3.list_objects_v2(Bucket=settings.bucket, Prefix=root).get("Contents", [])
    if not final:  # another delivery will try: nothing is final yet
        assert (state.files_rejected, state.files_outstanding) == (0, 1)
        assert keys == []
        return
    assert (state.files_rejected, state.files_outstanding) == (1, 0)
    assert state.status == "completed_with_errors"
    record = orjson.loads(
        s3.get_object(Bucket=settings.bucket, Key=f"{root}rejected/{job.file_id}.json")[
            "Body"
        ].read()
    )
    assert record["reason"] == "http_503"
