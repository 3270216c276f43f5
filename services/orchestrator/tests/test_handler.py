"""The page handler end to end: simulator over real HTTP, moto SQS, the real runtime."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from exportpipe.common.errors import MalformedMessage, UpstreamRejected
from exportpipe.common.producer import BatchProducer
from exportpipe.common.schemas import DownloadJob, ExportRequested, decode, job_id_for
from exportpipe.common.sqs import JobContext
from exportpipe.orchestrator.handler import not_ready_delay
from exportpipe.tools.simulator import ExportSpec, Fault, FileSpec

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.slow


def ids(export: ExportSpec) -> set[str]:
    return {job_id_for(export.export_id, export.file(i).file_id) for i in range(export.count)}


def reason_of(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"]["exportpipe-error-reason"]["StringValue"])


def test_multi_page_export_with_an_empty_page(stack: Stack, wait_until: Any) -> None:
    export = ExportSpec.mixed("exp-multi", 25, page_size=100, empty_pages={1})
    stack.sim.add_export(export)
    stack.submit("exp-multi", tenant="acme")

    with stack.running():
        jobs = stack.collect_until(ids(export))
        wait_until(stack.requests_idle)

    assert len(jobs) == 25  # exactly once each: nothing crashed
    by_file = {j.file_id: j for j in jobs}
    for i in range(export.count):
        spec = export.file(i)
        job = by_file[spec.file_id]
        content = stack.sim.content("exp-multi", spec.file_id)
        assert job.url == stack.sim.file_url("exp-multi", spec)
        assert job.sha256 == content.listed_sha256
        assert job.size_bytes == content.listed_size
        assert job.compression == spec.info.compression
        assert job.format == spec.info.format
        assert job.file_name == spec.name
        assert job.tenant == "acme"
        assert job.destination.bucket == "exports-bucket"
        assert job.destination.prefix == "exports/exp-multi/"
    # page 0 (10), page 1 (empty), page 2 (10), page 3 (5)
    listings = stack.sim.requests("listing")
    assert [r.status for r in listings] == [200, 200, 200, 200]
    snapshot = stack.metrics.snapshot()
    assert snapshot["PagesFetched"] == 4
    assert snapshot["JobsEmitted"] == 25
    assert snapshot["ExportsListed"] == 1
    assert snapshot["ApiLatency"] > 0
    assert stack.queue_depth(stack.settings.requests_dlq_url) == 0


def test_destination_prefix_from_the_request(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-prefix", 3)
    stack.sim.add_export(export)
    stack.submit("exp-prefix", destination_prefix="exports/tenants/acme")
    with stack.running():
        jobs = stack.collect_until(ids(export))
    assert {j.destination.prefix for j in jobs} == {"exports/tenants/acme/exp-prefix/"}


def test_destination_prefix_outside_the_output_prefix_is_dead_lettered(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-out", 3))
    stack.submit("exp-out", destination_prefix="elsewhere/")
    with stack.running():
        (dead,) = stack.dead_letters()
    assert reason_of(dead) == "destination_not_allowed"
    assert stack.drain_jobs() == []


def test_pending_then_ready_rechecks_later_without_sleeping(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-pending", 12, pending_polls=2)
    stack.sim.add_export(export)
    stack.submit("exp-pending")
    with stack.running():
        jobs = stack.collect_until(ids(export))
    assert len(jobs) == 12
    statuses = [r.status for r in stack.sim.requests("status")]
    assert statuses == [200, 200, 200]  # pending, pending, ready
    assert stack.metrics.snapshot()["NotReadyRechecks"] == 2
    # Each re-check came back through SQS 1 after its delay (>= 1 s), not a sleep.
    times = [r.at for r in stack.sim.requests("status")]
    assert times[1] - times[0] >= 0.9
    assert times[2] - times[1] >= 0.9


def test_409_from_the_listing_is_rechecked_later(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-409", 15)
    stack.sim.add_export(export)
    # The status said ready, yet the listing answers 409 once: re-check, do not fail.
    stack.sim.inject(Fault(route="listing", export_id="exp-409", status=409))
    stack.submit("exp-409")
    with stack.running():
        jobs = stack.collect_until(ids(export))
    assert {j.job_id for j in jobs} == ids(export)
    assert stack.metrics.snapshot()["NotReadyRechecks"] == 1


def test_429_with_retry_after_is_honoured(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-429", 8)
    stack.sim.add_export(export)
    stack.sim.inject(Fault(route="listing", status=429, retry_after=2))
    stack.submit("exp-429")
    with stack.running():
        jobs = stack.collect_until(ids(export))
    assert len(jobs) == 8
    listing = stack.sim.requests("listing")
    assert [r.status for r in listing] == [429, 200]
    assert listing[1].at - listing[0].at >= 2.0
    assert stack.metrics.snapshot()["Failures"] == 1


def test_500_burst_then_success(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-500", 8)
    stack.sim.add_export(export)
    # 3 in-process tries fail, the message comes back, 2 more fail, then success.
    stack.sim.inject(Fault(route="listing", status=500, times=5))
    stack.submit("exp-500")
    with stack.running():
        jobs = stack.collect_until(ids(export))
    assert len(jobs) == 8
    assert [r.status for r in stack.sim.requests("listing")] == [500] * 5 + [200]
    assert stack.queue_depth(stack.settings.requests_dlq_url) == 0


def test_401_goes_to_the_dlq_with_its_reason(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-401", 5))
    stack.with_settings(export_api_token="wrong-token")
    stack.submit("exp-401")
    with stack.running():
        (dead,) = stack.dead_letters()
    assert reason_of(dead) == "upstream_unauthorized"
    message = dead["MessageAttributes"]["exportpipe-error-message"]["StringValue"]
    assert "wrong-token" not in message
    assert decode(dead["Body"], ExportRequested).export_id == "exp-401"
    assert stack.drain_jobs() == []


def test_malformed_json_goes_to_the_dlq(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-junk", 5))
    stack.sim.inject(Fault(route="listing", malformed="json"))
    stack.submit("exp-junk")
    with stack.running():
        (dead,) = stack.dead_letters()
    assert reason_of(dead) == "malformed_response"
    assert stack.drain_jobs() == []


@pytest.mark.parametrize(
    ("final", "reason"), [("failed", "export_failed"), ("expired", "export_expired")]
)
def test_failed_or_expired_export_is_dead_lettered(stack: Stack, final: str, reason: str) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-gone", 5, final_status=final))
    stack.submit("exp-gone")
    with stack.running():
        (dead,) = stack.dead_letters()
    assert reason_of(dead) == reason


def _rejection(s3: Any, export_id: str, file_id: str) -> dict[str, Any]:
    key = f"exports/{export_id}/rejected/{file_id}.json"
    return dict(orjson.loads(s3.get_object(Bucket="exports-bucket", Key=key)["Body"].read()))


def test_invalid_entry_is_rejected_and_its_page_goes_on(stack: Stack, s3: Any) -> None:
    bad = FileSpec(file_id="evil", name="evil.jsonl", kind="jsonl", url="file:///etc/passwd")
    good = [FileSpec(file_id=f"g{i:02d}", name=f"g{i}.jsonl", kind="jsonl") for i in range(14)]
    # Page 0: g00..g09; page 1: g10..g13 + evil.
    files = (*good[:10], *good[10:], bad)
    stack.sim.add_export(ExportSpec(export_id="exp-evil", files=files))
    stack.submit("exp-evil")
    with stack.running():
        stack.collect_until({job_id_for("exp-evil", f.file_id) for f in good})
        stack.drain_jobs()
    # The bad entry blocked nobody: every good file of its page has its job...
    assert {j.file_id for j in stack.collected} == {f.file_id for f in good}
    assert stack.queue_depth(stack.settings.requests_dlq_url) == 0
    # ...and it has a rejection record naming the entry and the field.
    record = _rejection(s3, "exp-evil", "evil")
    assert record["reason"] == "invalid_listing_entry"
    assert "files[4]" in record["message"]
    assert "scheme 'file'" in record["message"]
    assert stack.metrics.snapshot()["EntriesRejected"] == 1


def test_a_wrongly_typed_entry_is_rejected_alone(stack: Stack, s3: Any) -> None:
    good = FileSpec(file_id="ok1", name="ok.jsonl", kind="jsonl")
    stack.sim.add_export(ExportSpec(export_id="exp-types", files=(good,)))
    orchestrator = stack.direct_handler()
    real_list_files = orchestrator.source.list_files

    def with_a_bad_entry(*args: Any, **kwargs: Any) -> Any:
        from exportpipe.orchestrator.http_source import _listed_file

        page = real_list_files(*args, **kwargs)
        bad = _listed_file({"file_id": 7, "name": "n", "url": "u", "format": "csv"}, 1, "/x")
        return dataclasses.replace(page, files=(*page.files, bad))

    orchestrator.handler._source.list_files = with_a_bad_entry  # type: ignore[method-assign]
    orchestrator.handler(stack.context(ExportRequested(export_id="exp-types")))
    orchestrator.close()
    assert [j.file_id for j in stack.drain_jobs()] == ["ok1"]
    found = s3.list_objects_v2(Bucket="exports-bucket", Prefix="exports/exp-types/rejected/")
    (key,) = [o["Key"] for o in found.get("Contents", [])]
    record = orjson.loads(s3.get_object(Bucket="exports-bucket", Key=key)["Body"].read())
    assert record["reason"] == "invalid_listing_entry"
    assert "'file_id' must be a string" in record["message"]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"listed_sha256": "abc123"}, "sha256"),
        ({"url": "https://user:pw@files.example.com/x"}, "user info"),
        ({"url": "/relative/path"}, "scheme"),
        ({"file_id": "has space"}, "file_id"),
        ({"file_id": ".."}, "file_id"),
        ({"file_id": "."}, "file_id"),
    ],
)
def test_entry_checks(stack: Stack, s3: Any, entry: dict[str, Any], field: str) -> None:
    ok = FileSpec(file_id="ok1", name="ok.jsonl", kind="jsonl")
    spec = FileSpec(file_id="x1", name="x.jsonl", kind="jsonl").model_copy(update=entry)
    stack.sim.add_export(ExportSpec(export_id="exp-check", files=(spec, ok)))
    orchestrator = stack.direct_handler()
    orchestrator.handler(stack.context(ExportRequested(export_id="exp-check")))
    orchestrator.close()
    assert [j.file_id for j in stack.drain_jobs()] == ["ok1"]
    recorded = spec.file_id if spec.file_id == "x1" else None
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket="exports-bucket", Prefix="exports/exp-check/").get(
            "Contents", []
        )
    ]
    (key,) = keys
    file_id = key.removeprefix("exports/exp-check/rejected/").removesuffix(".json")
    if recorded is not None:
        assert file_id == recorded
    else:  # an id that breaks the rule is recorded under a digest, never as ./..
        assert file_id.startswith("invalid-")
    record = _rejection(s3, "exp-check", file_id)
    assert record["reason"] == "invalid_listing_entry"
    assert field in record["message"]
    assert "pw@" not in orjson.dumps(record).decode()
    s3.delete_object(Bucket="exports-bucket", Key=key)


def test_null_compression_is_passed_on_for_detection(stack: Stack) -> None:
    spec = FileSpec(file_id="n1", name="n1.gz", declare_compression=False, declare_sha256=False)
    stack.sim.add_export(ExportSpec(export_id="exp-null", files=(spec,)))
    orchestrator = stack.direct_handler()
    orchestrator.handler(stack.context(ExportRequested(export_id="exp-null")))
    orchestrator.close()
    (job,) = stack.drain_jobs()
    assert (job.compression, job.sha256, job.format) == (None, None, "jsonl")


def test_unknown_export_and_bad_message(stack: Stack) -> None:
    orchestrator = stack.direct_handler()
    with pytest.raises(UpstreamRejected) as caught:
        orchestrator.handler(stack.context(ExportRequested(export_id="no-such-export")))
    assert caught.value.reason == "export_not_found"
    with pytest.raises(MalformedMessage):
        orchestrator.handler(stack.context('{"schema": "exportpipe.ExportRequested"'))
    orchestrator.close()
    assert stack.metrics.snapshot()["Failures"] == 2


def test_not_ready_past_the_limit_is_permanent(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-never", 1, pending_polls=10**6))
    orchestrator = stack.direct_handler()
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    request = ExportRequested(
        export_id="exp-never", not_ready_checks=120, first_not_ready_at=long_ago
    )
    with pytest.raises(UpstreamRejected) as caught:
        orchestrator.handler(stack.context(request))
    assert caught.value.reason == "export_not_ready_timeout"
    # Within the limit it is re-enqueued, keeping its first-seen time.
    recent = request.model_copy(update={"first_not_ready_at": datetime.now(UTC)})
    orchestrator.handler(stack.context(recent))
    orchestrator.close()
    response = stack.sqs.receive_message(
        QueueUrl=stack.settings.requests_queue_url, WaitTimeSeconds=3
    )
    again = decode(response["Messages"][0]["Body"], ExportRequested)
    assert again.not_ready_checks == 121
    assert again.first_not_ready_at == recent.first_not_ready_at


def test_not_ready_delay_grows_to_the_sqs_limit() -> None:
    delays = [not_ready_delay(n, initial=30, maximum=900) for n in range(8)]
    assert delays == [30, 60, 120, 240, 480, 900, 900, 900]
    assert not_ready_delay(10_000, initial=30, maximum=900) == 900
    assert not_ready_delay(3, initial=0, maximum=900) == 0


def test_cursor_that_does_not_advance_is_rejected(stack: Stack) -> None:
    stack.sim.add_export(ExportSpec.mixed("exp-stuck", 30))
    orchestrator = stack.direct_handler()
    page0 = stack.context(ExportRequested(export_id="exp-stuck"))
    orchestrator.handler(page0)
    cont = decode(
        stack.sqs.receive_message(QueueUrl=stack.settings.requests_queue_url)["Messages"][0][
            "Body"
        ],
        ExportRequested,
    )
    assert cont.cursor is not None
    # Pretend the vendor hands back the cursor we sent.
    source = orchestrator.source
    original = source.list_files

    def echo(export_id: str, *, cursor: str | None, limit: int) -> Any:
        page = original(export_id, cursor=cursor, limit=limit)
        return type(page)(files=page.files, next_cursor=cursor)

    source.list_files = echo  # type: ignore[method-assign]
    with pytest.raises(UpstreamRejected, match="repeats") as caught:
        orchestrator.handler(stack.context(cont))
    assert caught.value.reason == "malformed_listing"
    orchestrator.close()


# ------------------------------------------------------------------------ crashes


class Crash(Exception):
    """Stands in for the process dying: nothing after it runs, nothing is cleaned up."""


class CrashAfterSend(BatchProducer):
    def send(self, messages: Any, *, delay_seconds: int = 0) -> int:
        super().send(messages, delay_seconds=delay_seconds)
        raise Crash("died after the jobs were sent")


class CrashAfterContinuation:
    """An SQS client that dies right after the continuation reached SQS 1."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message(self, **kwargs: Any) -> Any:
        result = self._sqs.send_message(**kwargs)
        raise Crash("died after the continuation was sent")
        return result  # pragma: no cover


def _receive_one(stack: Stack) -> JobContext:
    response = stack.sqs.receive_message(
        QueueUrl=stack.settings.requests_queue_url,
        VisibilityTimeout=1,
        WaitTimeSeconds=2,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    (raw,) = response["Messages"]
    return JobContext(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        receive_count=int(raw["Attributes"]["ApproximateReceiveCount"]),
        attributes={},
    )


@pytest.mark.parametrize("when", ["after_jobs", "after_continuation"])
def test_crash_before_delete_reruns_the_page_without_gaps(
    stack: Stack, wait_until: Any, when: str
) -> None:
    export = ExportSpec.mixed("exp-crash", 30)  # 3 pages of 10
    stack.sim.add_export(export)
    stack.submit("exp-crash")

    # The first task takes page 0, sends its jobs (and maybe the continuation), and
    # dies before deleting the input: the message is neither deleted nor released.
    crashing = stack.direct_handler()
    if when == "after_jobs":
        handler = type(crashing.handler)(
            settings=stack.settings,
            source=crashing.source,
            sqs=stack.sqs,
            jobs=CrashAfterSend(stack.sqs, stack.settings.jobs_queue_url),
            logger=crashing.handler._log,
            metrics=stack.metrics,
            s3=crashing.handler._s3,
        )
    else:
        handler = type(crashing.handler)(
            settings=stack.settings,
            source=crashing.source,
            sqs=CrashAfterContinuation(stack.sqs),
            jobs=crashing.producer,
            logger=crashing.handler._log,
            metrics=stack.metrics,
            s3=crashing.handler._s3,
        )
    ctx = _receive_one(stack)
    with pytest.raises(Crash):
        handler(ctx)
    crashing.close()

    # A healthy task picks up where SQS puts things once the lease runs out.
    with stack.running():
        stack.collect_until(ids(export))
        wait_until(stack.requests_idle, timeout=30)
        stack.drain_jobs()

    got = [j.job_id for j in stack.collected]
    assert set(got) == ids(export)  # no gap, and nothing foreign
    if when == "after_jobs":
        assert len(got) == 40  # page 0 sent twice
    else:
        # Two continuations for page 1: pages 0, 1 and 2 each listed twice.
        assert len(got) == 60
    assert stack.queue_depth(stack.settings.requests_dlq_url) == 0
    assert all(isinstance(j, DownloadJob) for j in stack.collected)
