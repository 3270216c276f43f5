"""Tracking table and completion against a real moto server (DynamoDB, S3, SNS, SQS)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import boto3
import orjson
import pytest

from exportpipe.common.completion import EventPublisher, ExportCompleter
from exportpipe.common.schemas import ExportCompleted, decode
from exportpipe.common.tracking import ExportTracker
from exportpipe.testing import Fault, FaultProxy, Request

PREFIX = "exports/exp-1/"


@pytest.fixture
def tracker(moto_server: str) -> ExportTracker:
    t = ExportTracker(boto3.client("dynamodb"), f"t-{uuid.uuid4().hex[:8]}")
    t.create_table()
    return t


@pytest.fixture
def events(moto_server: str, sqs: Any) -> tuple[EventPublisher, str]:
    """An SNS topic with an SQS subscription so tests can count published events."""
    sns = boto3.client("sns")
    topic = sns.create_topic(Name=f"done-{uuid.uuid4().hex[:8]}")["TopicArn"]
    url = sqs.create_queue(QueueName=f"ev-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return EventPublisher(sns=sns, topic_arn=topic), url


def _page(t: ExportTracker, page: int, files: int | list[str], *, last: bool = False) -> bool:
    return t.record_page("exp-1", page, files, is_last=last, bucket="bkt", prefix=PREFIX)


def _file(t: ExportTracker, file_id: str, outcome: str = "done", **kw: Any) -> bool:
    return t.record_file(
        "exp-1",
        file_id,
        outcome,
        bucket=kw.pop("bucket", "bkt"),
        prefix=PREFIX,
        **kw,  # type: ignore[arg-type]
    )


def test_pages_and_files_count_once(tracker: ExportTracker) -> None:
    assert _page(tracker, 0, 3)
    assert not _page(tracker, 0, 3)  # re-run page
    assert _page(tracker, 1, 0)  # empty page
    assert _page(tracker, 2, 2, last=True)
    assert _file(tracker, "f1", size=10, detail=f"{PREFIX}manifests/f1.json")
    assert not _file(tracker, "f1", size=10)  # redelivered job
    assert _file(tracker, "f2", "rejected", detail="integrity_mismatch")
    state = tracker.get("exp-1")
    assert state is not None
    assert (state.pages_listed, state.files_expected) == (3, 5)
    assert (state.files_done, state.files_rejected, state.files_outstanding) == (1, 1, 3)
    assert state.bytes == 10
    assert state.listing_complete
    assert tracker.get("unknown") is None


def test_exactly_one_manifest_and_event_when_last_two_finish_together(
    tracker: ExportTracker, events: tuple[EventPublisher, str], s3: Any, sqs: Any
) -> None:
    s3.create_bucket(Bucket="bkt")
    publisher, events_url = events
    _page(tracker, 0, 3, last=True)
    for fid in ("f1", "f2"):
        s3.put_object(
            Bucket="bkt",
            Key=f"{PREFIX}manifests/{fid}.json",
            Body=orjson.dumps({"file_id": fid, "members": [{"key": "k", "size": 1}]}),
        )
    _file(tracker, "f3", "rejected", detail="validation_failed: line 3 is not an object")
    results: list[ExportCompleted | None] = []
    barrier = threading.Barrier(2)

    def finish(fid: str) -> None:
        completer = ExportCompleter(tracker, s3, publisher, owner=fid)
        _file(tracker, fid, size=1, detail=f"{PREFIX}manifests/{fid}.json")
        barrier.wait()
        results.append(completer.complete_if_done("exp-1"))

    threads = [threading.Thread(target=finish, args=(f,)) for f in ("f1", "f2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    published = [r for r in results if r is not None]
    assert len(published) == 1
    event = published[0]
    assert event.status == "completed_with_errors"
    assert (event.files_expected, event.files_done, event.files_rejected) == (3, 2, 1)
    manifest = orjson.loads(
        s3.get_object(Bucket="bkt", Key=f"{PREFIX}_manifest.json")["Body"].read()
    )
    assert sorted(f["file_id"] for f in manifest["files"]) == ["f1", "f2"]
    assert manifest["rejected"] == [
        {"file_id": "f3", "reason": "validation_failed: line 3 is not an object", "size": 0}
    ]
    got = sqs.receive_message(QueueUrl=events_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    bodies = [m["Body"] for m in got.get("Messages", [])]
    assert len(bodies) == 1
    assert decode(bodies[0], ExportCompleted).manifest == f"s3://bkt/{PREFIX}_manifest.json"
    state = tracker.get("exp-1")
    assert state is not None
    assert state.status == "completed_with_errors"
    # A late duplicate outcome changes nothing and completes nothing again.
    assert not _file(tracker, "f1", size=1)
    assert ExportCompleter(tracker, s3, publisher).complete_if_done("exp-1") is None


def test_not_complete_until_listing_complete(
    tracker: ExportTracker, events: tuple[EventPublisher, str], s3: Any
) -> None:
    publisher, _ = events
    _page(tracker, 0, 1)
    _file(tracker, "f1", "rejected", detail="x")
    completer = ExportCompleter(tracker, s3, publisher)
    assert completer.complete_if_done("exp-1") is None  # more pages may come
    state = tracker.get("exp-1")
    assert state is not None
    assert state.status == "listing"


def test_stalled_detection(tracker: ExportTracker) -> None:
    _page(tracker, 0, 2)
    _file(tracker, "f1")
    now = time.time()
    assert tracker.stalled(600, now=now) == []
    stalled = tracker.stalled(600, now=now + 601)
    assert [s.export_id for s in stalled] == ["exp-1"]
    assert stalled[0].is_stalled(now + 601, 600)
    tracker.mark_failed("exp-1", "upstream_rejected: export expired", bucket="bkt", prefix=PREFIX)
    assert tracker.stalled(600, now=now + 601) == []  # finished exports leave the index


def test_stall_watcher_reports_metric(tracker: ExportTracker) -> None:
    from exportpipe.common.observability import Metrics, get_logger
    from exportpipe.common.stall import StallWatcher

    _page(tracker, 0, 2)
    metrics = Metrics(namespace="ExportPipe", service="test")
    watcher = StallWatcher(tracker, metrics, get_logger("test"), stall_seconds=0.0)
    time.sleep(0.01)
    assert [s.export_id for s in watcher.check()] == ["exp-1"]
    assert metrics.snapshot()["ExportsStalled"] == 1
    quiet = StallWatcher(
        tracker, Metrics(namespace="ExportPipe", service="t"), get_logger("t"), stall_seconds=3600
    )
    assert quiet.check() == []


def test_claim_survives_a_lost_response_and_stays_exclusive(
    tracker: ExportTracker, moto_server: str
) -> None:
    assert _page(tracker, 0, 1, last=True)
    assert _file(tracker, "f0")
    lost: list[str] = []

    def lose_first_update(request: Request) -> Fault | None:
        if request.operation != "UpdateItem" or lost:
            return None
        lost.append(request.operation)
        return Fault(drop_response=True)

    with FaultProxy(upstream=moto_server, rules=[lose_first_update]) as proxy:
        proxied = ExportTracker(
            boto3.client("dynamodb", endpoint_url=proxy.endpoint), tracker.table
        )
        # The update applied but its answer was lost; the retry must see its own claim.
        assert proxied.try_claim_completion("exp-1", "owner-a")
        assert proxy.faults["drop_response"] == 1
    # Another call, even by the same owner (another thread), does not get it too.
    assert not tracker.try_claim_completion("exp-1", "owner-a")
    assert not tracker.try_claim_completion("exp-1", "owner-b")


def _count(t: ExportTracker, file_id: str, outcome: str = "done") -> str:
    return t.count_file("exp-1", file_id, outcome, size=1, bucket="bkt", prefix=PREFIX)  # type: ignore[arg-type]


def _dynamodb_calls(t: ExportTracker) -> list[str]:
    seen: list[str] = []
    t._db.meta.events.register("before-call.dynamodb.*", lambda model, **_: seen.append(model.name))
    return seen


def test_counting_a_file_is_one_write_and_no_read(tracker: ExportTracker) -> None:
    _page(tracker, 0, ["f1", "f2", "f3"], last=True)
    calls = _dynamodb_calls(tracker)
    assert _count(tracker, "f1") == "counted"
    assert calls == ["TransactWriteItems"]
    assert _count(tracker, "f2", "rejected") == "counted"
    assert _count(tracker, "f1") == "already_counted"  # redelivered
    assert _count(tracker, "f3") == "last"
    assert _count(tracker, "f3") == "already_counted"
    assert _count(tracker, "never-listed") == "not_listed"  # the one case that reads
    assert calls.count("GetItem") == 1
    state = tracker.get("exp-1")
    assert state is not None
    assert (state.files_done, state.files_rejected, state.files_outstanding) == (2, 1, 0)
    assert state.bytes == 3


def test_no_file_is_last_before_the_listing_is_complete(tracker: ExportTracker) -> None:
    _page(tracker, 0, ["f1", "f2"])
    assert [_count(tracker, f) for f in ("f1", "f2")] == ["counted", "counted"]
    _page(tracker, 1, ["f3"], last=True)
    assert _count(tracker, "f3") == "last"


def test_exactly_one_of_the_last_files_finishing_together_is_last(
    tracker: ExportTracker,
) -> None:
    _page(tracker, 0, [f"f{i}" for i in range(4)], last=True)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def finish(fid: str) -> None:
        barrier.wait()
        results.append(_count(tracker, fid))

    threads = [threading.Thread(target=finish, args=(f"f{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["counted", "counted", "counted", "last"]
    state = tracker.get("exp-1")
    assert state is not None
    assert (state.files_done, state.files_outstanding) == (4, 0)


def test_outcomes_for_files_the_export_never_listed_are_ignored(tracker: ExportTracker) -> None:
    assert tracker.record_page(
        "exp-ids", 0, ["f1", "f2"], is_last=True, bucket="bkt", prefix="exports/exp-ids/"
    )

    def record(export_id: str, file_id: str) -> bool:
        return tracker.record_file(
            export_id, file_id, "rejected", detail="x", bucket="bkt", prefix=f"exports/{export_id}/"
        )

    assert not record("exp-ids", "never-listed")
    assert not record("exp-unknown", "f1")  # an export nobody listed
    assert record("exp-ids", "f1")
    state = tracker.get("exp-ids")
    assert state is not None
    assert (state.files_expected, state.files_rejected, state.files_outstanding) == (2, 1, 1)
    assert state.status == "listing"
    assert tracker.get("exp-unknown") is None
    assert record("exp-ids", "f2")
    state = tracker.get("exp-ids")
    assert state is not None
    assert state.files_outstanding == 0


def test_the_export_manifest_keeps_every_file_in_order_past_the_read_window(
    tracker: ExportTracker, events: tuple[EventPublisher, str], s3: Any
) -> None:
    # More files than reads in flight: each file manifest appears once, in the order
    # the tracker lists the outcomes, and the streamed document stays valid.
    s3.create_bucket(Bucket="bkt")
    ids = [f"f{i:03d}" for i in range(40)]
    _page(tracker, 0, ids, last=True)
    for fid in ids:
        key = f"{PREFIX}manifests/{fid}.json"
        s3.put_object(Bucket="bkt", Key=key, Body=orjson.dumps({"file_id": fid}))
        _file(tracker, fid, size=1, detail=key)
    publisher, _url = events
    assert ExportCompleter(tracker, s3, publisher).complete_if_done("exp-1") is not None
    raw = s3.get_object(Bucket="bkt", Key=f"{PREFIX}_manifest.json")["Body"].read()
    listed = [fid for fid, *_ in tracker.file_outcomes("exp-1")]
    assert [f["file_id"] for f in orjson.loads(raw)["files"]] == listed
    assert sorted(listed) == ids


def _write_units(t: ExportTracker) -> list[int]:
    """Write units of each DynamoDB write ``t`` makes from now on (items under 1 KB):
    1 per put or update, 1 per batch-written item, 2 per transaction item."""
    units: list[int] = []

    def count(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "TransactWriteItems":
            units.append(2 * len(params["TransactItems"]))
        elif model.name == "BatchWriteItem":
            units.append(sum(len(r) for r in params["RequestItems"].values()))
        elif model.name in ("PutItem", "UpdateItem", "DeleteItem"):
            units.append(1)

    t._db.meta.events.register("provide-client-params.dynamodb.*", count)
    return units


def test_listing_and_counting_a_file_costs_five_write_units(tracker: ExportTracker) -> None:
    # The file's outcome goes onto its LISTED# item: the count is one two-item
    # transaction (4 units) on top of the listing's one unit per file (ADR 0015).
    ids = [f"f{i}" for i in range(10)]
    _page(tracker, 0, ["page-only"])  # META exists; this page's units are not counted
    units = _write_units(tracker)
    _page(tracker, 1, ids, last=True)
    page_units = sum(units) - 4  # the PAGE# + META transaction, once per page
    assert page_units == len(ids)
    units.clear()
    for fid in ids:
        assert _count(tracker, fid) == "counted"
    assert units == [4] * len(ids)


def test_a_page_listed_again_keeps_the_outcomes_counted_on_it(tracker: ExportTracker) -> None:
    # A re-run page (or a second listing running at once) writes the page's LISTED#
    # items again: an outcome already on one must survive, or a redelivered job would
    # count its file twice.
    _page(tracker, 0, ["f1", "f2"], last=True)
    assert _count(tracker, "f1") == "counted"
    assert not _page(tracker, 0, ["f1", "f2"], last=True)  # the page counts once
    assert _count(tracker, "f1") == "already_counted"
    assert [(fid, outcome) for fid, outcome, *_ in tracker.file_outcomes("exp-1")] == [
        ("f1", "done")
    ]
    assert _count(tracker, "f2") == "last"
    state = tracker.get("exp-1")
    assert state is not None
    assert (state.files_done, state.files_outstanding) == (2, 0)


def test_files_listed_by_an_older_release_keep_their_outcomes_in_file_items(
    tracker: ExportTracker,
) -> None:
    # An older release wrote bare LISTED# items (a batch put) and counted outcomes as
    # FILE# items; after an upgrade its files still count exactly once, there.
    _page(tracker, 0, ["new"])
    db = tracker._db
    for fid in ("old1", "old2"):
        db.put_item(
            TableName=tracker.table,
            Item={"pk": {"S": "EXPORT#exp-1"}, "sk": {"S": f"LISTED#{fid}"}},
        )
    assert _page(tracker, 1, 2, last=True)  # counted by the older release's rule
    db.put_item(  # old1 was counted by an older worker
        TableName=tracker.table,
        Item={
            "pk": {"S": "EXPORT#exp-1"},
            "sk": {"S": "FILE#old1"},
            "outcome": {"S": "done"},
            "detail": {"S": "m/old1"},
            "size": {"N": "1"},
        },
    )
    db.update_item(
        TableName=tracker.table,
        Key={"pk": {"S": "EXPORT#exp-1"}, "sk": {"S": "META"}},
        UpdateExpression="ADD files_done :one, files_outstanding :minus",
        ExpressionAttributeValues={":one": {"N": "1"}, ":minus": {"N": "-1"}},
    )
    assert _count(tracker, "old1") == "already_counted"
    assert _count(tracker, "old2") == "counted"
    assert _count(tracker, "old2") == "already_counted"
    assert _count(tracker, "new") == "last"
    outcomes = {fid: outcome for fid, outcome, *_ in tracker.file_outcomes("exp-1")}
    assert outcomes == {"new": "done", "old1": "done", "old2": "done"}
    state = tracker.get("exp-1")
    assert state is not None
    assert (state.files_expected, state.files_done, state.files_outstanding) == (3, 3, 0)
