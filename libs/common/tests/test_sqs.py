"""The consumer runtime against a real moto server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exportpipe.common.errors import (
    JobDeadlineExceeded,
    MalformedMessage,
    RateLimited,
    UpstreamUnavailable,
)
from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.sqs import ConsumerConfig, JobContext, QueueConsumer, queue_depth
from exportpipe.testing import create_queue_pair


def _config(queue_pair: tuple[str, str], **overrides: Any) -> ConsumerConfig:
    fields: dict[str, Any] = {
        "queue_url": queue_pair[0],
        "dlq_url": queue_pair[1],
        "concurrency": 2,
        "wait_time_seconds": 1,
        "visibility_timeout": 10,
        "heartbeat_seconds": 3,
        "retry_base_seconds": 1,
        "retry_max_seconds": 2,
        "shutdown_grace_seconds": 5,
        "release_wait_seconds": 2,
    }
    fields.update(overrides)
    return ConsumerConfig(**fields)


@contextmanager
def running(
    sqs: Any, config: ConsumerConfig, handler: Callable[[JobContext], None], **kw: Any
) -> Iterator[QueueConsumer]:
    consumer = QueueConsumer(
        sqs,
        config,
        handler,
        logger=get_logger("test-consumer"),
        metrics=Metrics(namespace="ExportPipe", service="test"),
        **kw,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.shutdown()
        thread.join(timeout=30)
        assert not thread.is_alive(), "consumer did not stop"


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    depth = queue_depth(sqs, url)
    return depth.visible, depth.in_flight


def test_queue_depth_counts_each_state(sqs: Any, queue_pair: tuple[str, str]) -> None:
    url = queue_pair[0]
    for body in ("a", "b"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)[
        "Messages"
    ]
    depth = queue_depth(sqs, url)
    assert (depth.visible, depth.in_flight, depth.delayed) == (1, 1, 1)
    assert depth.total == 3


def test_success_deletes(sqs: Any, queue_pair: tuple[str, str]) -> None:
    seen: list[str] = []
    for i in range(5):
        sqs.send_message(QueueUrl=queue_pair[0], MessageBody=f"m{i}")
    with running(sqs, _config(queue_pair), lambda ctx: seen.append(ctx.body)):
        wait_for(lambda: len(seen) == 5)
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0))
    assert sorted(seen) == [f"m{i}" for i in range(5)]


def test_retryable_returns_message_with_backoff(sqs: Any, queue_pair: tuple[str, str]) -> None:
    calls: list[tuple[float, int]] = []

    def handler(ctx: JobContext) -> None:
        calls.append((time.monotonic(), ctx.receive_count))
        if len(calls) == 1:
            raise UpstreamUnavailable("503 from upstream")

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="x")
    with running(sqs, _config(queue_pair), handler):
        wait_for(lambda: len(calls) == 2)
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0))
    assert [c[1] for c in calls] == [1, 2]
    assert calls[1][0] - calls[0][0] >= 0.4  # came back after a backoff, not at once


def test_retry_after_is_honoured(sqs: Any, queue_pair: tuple[str, str]) -> None:
    calls: list[float] = []

    def handler(ctx: JobContext) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RateLimited("429", retry_after=3)

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="x")
    with running(sqs, _config(queue_pair), handler):
        wait_for(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 2.5


@pytest.mark.parametrize("asked", ["43200", "inf", "nan"])
def test_a_hostile_retry_after_is_capped(sqs: Any, queue_pair: tuple[str, str], asked: str) -> None:
    calls: list[float] = []

    def handler(ctx: JobContext) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            # 12 hours (or no number at all) asked for: the message would vanish for
            # the rest of SQS's ceiling on every receive.
            raise RateLimited("429", retry_after=float(asked))

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="x")
    with running(sqs, _config(queue_pair, retry_after_max_seconds=2), handler):
        wait_for(lambda: len(calls) == 2, timeout=15)
    assert calls[1] - calls[0] < 10


def test_a_job_past_max_job_seconds_is_dead_lettered_with_its_reason(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    reasons: list[str] = []

    def handler(ctx: JobContext) -> None:
        try:
            ctx.token.sleep(60)  # a job that would run on; the deadline wakes it
        except JobDeadlineExceeded as exc:
            reasons.append(exc.reason)
            raise

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="long")
    config = _config(queue_pair, max_job_seconds=1.5, heartbeat_seconds=0.5)
    with running(sqs, config, handler):
        wait_for(lambda: queue_counts(sqs, queue_pair[1])[0] == 1)
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0))
    assert reasons == ["job_deadline_exceeded"]
    dead = sqs.receive_message(
        QueueUrl=queue_pair[1], MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"][0]
    attrs = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attrs["exportpipe-error-reason"] == "job_deadline_exceeded"
    assert "EXPORTPIPE_MAX_JOB_SECONDS" in attrs["exportpipe-error-message"]


def test_permanent_goes_to_dlq_with_reason(sqs: Any, queue_pair: tuple[str, str]) -> None:
    def handler(ctx: JobContext) -> None:
        raise MalformedMessage("body is not JSON: https://h/x?sig=SECRET")

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="{not json")
    with running(sqs, _config(queue_pair), handler):
        wait_for(lambda: queue_counts(sqs, queue_pair[1])[0] == 1)
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0))
    dead = sqs.receive_message(
        QueueUrl=queue_pair[1], MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"][0]
    attrs = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert dead["Body"] == "{not json"
    assert attrs["exportpipe-error-reason"] == "malformed_message"
    assert attrs["exportpipe-error-type"] == "MalformedMessage"
    assert attrs["exportpipe-source-queue"] == queue_pair[0]
    assert "SECRET" not in attrs["exportpipe-error-message"]


def test_unexpected_error_dead_letters_on_last_receive(sqs: Any) -> None:
    pair = create_queue_pair(sqs, "q-bug-" + str(time.monotonic_ns()), max_receive_count=3)
    receives: list[int] = []

    def handler(ctx: JobContext) -> None:
        receives.append(ctx.receive_count)
        raise KeyError("a bug")

    sqs.send_message(QueueUrl=pair[0], MessageBody="x")
    config = _config(pair, max_receive_count=3, retry_base_seconds=0.5, retry_max_seconds=0.5)
    with running(sqs, config, handler):
        wait_for(lambda: queue_counts(sqs, pair[1])[0] == 1)
    assert receives == [1, 2, 3]
    dead = sqs.receive_message(QueueUrl=pair[1], MessageAttributeNames=["All"])["Messages"][0]
    assert dead["MessageAttributes"]["exportpipe-error-reason"]["StringValue"] == (
        "unhandled_error"
    )


def test_retryable_error_dead_letters_with_its_reason_on_last_receive(sqs: Any) -> None:
    pair = create_queue_pair(sqs, "q-stall-" + str(time.monotonic_ns()), max_receive_count=2)
    seen: list[tuple[int, bool]] = []

    def handler(ctx: JobContext) -> None:
        seen.append((ctx.receive_count, ctx.final_attempt))
        raise UpstreamUnavailable("resumes brought nothing", reason="download_stalled")

    sqs.send_message(QueueUrl=pair[0], MessageBody="x")
    config = _config(pair, max_receive_count=2, retry_base_seconds=0.5, retry_max_seconds=0.5)
    with running(sqs, config, handler):
        wait_for(lambda: queue_counts(sqs, pair[1])[0] == 1)
        wait_for(lambda: queue_counts(sqs, pair[0]) == (0, 0))
    assert seen == [(1, False), (2, True)]
    dead = sqs.receive_message(QueueUrl=pair[1], MessageAttributeNames=["All"])["Messages"][0]
    assert dead["MessageAttributes"]["exportpipe-error-reason"]["StringValue"] == (
        "download_stalled"
    )


def test_heartbeat_keeps_a_long_job_exactly_once(sqs: Any, queue_pair: tuple[str, str]) -> None:
    """A job three times longer than the visibility timeout runs once across two consumers."""
    runs: Counter[str] = Counter()

    def handler(ctx: JobContext) -> None:
        runs[ctx.body] += 1
        time.sleep(7)

    config = _config(queue_pair, visibility_timeout=2, heartbeat_seconds=0.5)
    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="long")
    with running(sqs, config, handler), running(sqs, config, handler):
        wait_for(lambda: runs["long"] >= 1)
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0), timeout=20)
    assert runs == Counter({"long": 1})


def test_backpressure_never_holds_more_than_concurrency(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    held: list[int] = []
    gate = threading.Event()
    consumers: list[QueueConsumer] = []

    def handler(ctx: JobContext) -> None:
        wait_for(lambda: bool(consumers))
        held.append(consumers[0].in_flight)
        gate.wait(2)

    for i in range(6):
        sqs.send_message(QueueUrl=queue_pair[0], MessageBody=str(i))
    with running(sqs, _config(queue_pair, concurrency=2), handler) as consumer:
        consumers.append(consumer)
        wait_for(lambda: len(held) >= 2)
        time.sleep(1.5)  # a greedy consumer would have received more by now
        assert queue_counts(sqs, queue_pair[0])[1] <= 2
        gate.set()
        wait_for(lambda: len(held) == 6)
    assert max(held) <= 2


def test_busy_hook_reports_transitions(sqs: Any, queue_pair: tuple[str, str]) -> None:
    states: list[bool] = []
    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="x")
    with running(
        sqs, _config(queue_pair), lambda ctx: time.sleep(0.3), on_busy_change=states.append
    ):
        wait_for(lambda: states == [True, False])


def test_shutdown_lets_short_jobs_finish_and_releases_long_ones(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    finished: list[str] = []
    cancelled: list[str] = []
    started = threading.Barrier(3)

    def handler(ctx: JobContext) -> None:
        short = ctx.body == "short"
        ctx.set_eta(1 if short else 3600)
        started.wait(10)
        deadline = time.monotonic() + (1 if short else 60)
        while time.monotonic() < deadline:
            if ctx.cancelled:
                cancelled.append(ctx.body)
                ctx.check()
            time.sleep(0.05)
        finished.append(ctx.body)

    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="short")
    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="long")
    with running(sqs, _config(queue_pair), handler):
        started.wait(20)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 10
    assert finished == ["short"]
    assert cancelled == ["long"]
    # The long job's message is visible again at once for another consumer; short is gone.
    wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (1, 0), timeout=5)
    got = sqs.receive_message(QueueUrl=queue_pair[0], WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in got] == ["long"]


@pytest.mark.slow
def test_sigterm_releases_job_to_second_consumer_and_exits_zero(
    sqs: Any, queue_pair: tuple[str, str], moto_server: str
) -> None:
    script = Path(__file__).with_name("consumer_proc.py")
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}
    sqs.send_message(QueueUrl=queue_pair[0], MessageBody="hours-long")

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), *queue_pair, "3600", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def next_start(proc: subprocess.Popen[str]) -> str:
        assert proc.stdout is not None
        for line in proc.stdout:  # JSON log lines interleave with the markers
            if line.startswith("started "):
                return line
        raise AssertionError("process ended without starting a job")

    first = start()
    second: subprocess.Popen[str] | None = None
    try:
        line = next_start(first)
        t0 = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 5 + 2 + 3  # grace is 5 s; long job released at once
        second = start()
        assert next_start(second) == line  # same message, picked up again
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        for proc in (first, second):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()  # never leave a consumer behind when an assertion fails
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()


def test_liveness_file_is_touched(sqs: Any, queue_pair: tuple[str, str], tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    with running(sqs, _config(queue_pair, liveness_file=beat), lambda ctx: None):
        wait_for(beat.exists, timeout=10)
        first = beat.stat().st_mtime_ns
        wait_for(lambda: beat.stat().st_mtime_ns > first, timeout=10)


def _calls(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every operation ``client`` sends from now on, with its parameters."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def on_call(params: dict[str, Any], model: Any, **_: Any) -> None:
        seen.append((model.name, dict(params)))

    client.meta.events.register("before-parameter-build.sqs.*", on_call)
    return seen


def test_budget_runs_many_cheap_jobs_and_few_dear_ones(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    """Budget 10: six jobs costing 1 run together; three costing 6 run one at a time."""
    lock = threading.Lock()
    running_now: dict[str, int] = Counter()
    peak: dict[str, int] = Counter()
    done: list[str] = []

    def handler(ctx: JobContext) -> None:
        kind = "cheap" if ctx.body.startswith("1") else "dear"
        with lock:
            running_now[kind] += 1
            peak[kind] = max(peak[kind], sum(running_now.values()))
        time.sleep(1.0)
        with lock:
            running_now[kind] -= 1
            done.append(kind)

    def cost(ctx: JobContext) -> int:
        return int(ctx.body.split(":")[0])

    config = _config(queue_pair, concurrency=8, budget=10)
    with running(sqs, config, handler, job_cost=cost):
        for i in range(6):
            sqs.send_message(QueueUrl=queue_pair[0], MessageBody=f"1:{i}")
        wait_for(lambda: done.count("cheap") == 6)
        for i in range(3):
            sqs.send_message(QueueUrl=queue_pair[0], MessageBody=f"6:{i}")
        wait_for(lambda: done.count("dear") == 3)
    assert peak["cheap"] >= 4  # a fixed two slots would have allowed two
    assert peak["dear"] == 1


def test_one_receive_asks_for_every_free_slot(sqs: Any, queue_pair: tuple[str, str]) -> None:
    calls = _calls(sqs)
    gate = threading.Event()
    with running(sqs, _config(queue_pair, concurrency=8), lambda _ctx: gate.wait(5)):
        wait_for(lambda: any(op == "ReceiveMessage" for op, _ in calls))
        gate.set()
    asked = [p["MaxNumberOfMessages"] for op, p in calls if op == "ReceiveMessage"]
    assert asked[0] == 8


def test_receive_asks_for_no_more_than_the_budget_could_start(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    calls = _calls(sqs)
    with running(sqs, _config(queue_pair, concurrency=8, budget=3), lambda _ctx: None):
        wait_for(lambda: any(op == "ReceiveMessage" for op, _ in calls))
    asked = [p["MaxNumberOfMessages"] for op, p in calls if op == "ReceiveMessage"]
    assert asked[0] == 3


def test_deletes_and_visibility_changes_go_out_in_batches(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    handled: list[str] = []

    def handler(ctx: JobContext) -> None:
        handled.append(ctx.body)
        if int(ctx.body) % 2 and ctx.receive_count == 1:
            raise UpstreamUnavailable("try later")

    for start in (0, 10):
        sqs.send_message_batch(
            QueueUrl=queue_pair[0],
            Entries=[{"Id": str(i), "MessageBody": str(start + i)} for i in range(10)],
        )
    calls = _calls(sqs)
    with running(sqs, _config(queue_pair, concurrency=10), handler):
        wait_for(lambda: len(handled) == 30, timeout=30)  # 20 + 10 retried once
        wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (0, 0), timeout=30)
    ops = Counter(op for op, _ in calls)
    assert ops["DeleteMessage"] == 0
    assert ops["ChangeMessageVisibility"] == 0
    # 20 deletes and 10 retries, one call per entry at worst: fewer calls than entries.
    assert 0 < ops["DeleteMessageBatch"] < 20
    assert 0 < ops["ChangeMessageVisibilityBatch"] < 10


def test_a_received_job_waiting_for_budget_is_released_at_shutdown(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    started: list[str] = []
    gate = threading.Event()

    def handler(ctx: JobContext) -> None:
        ctx.set_eta(0)  # finishes within the shutdown grace: not released
        started.append(ctx.body)
        gate.wait(3)

    def cost(ctx: JobContext) -> int:
        return 1 if ctx.body == "cheap" else 2

    config = _config(queue_pair, concurrency=4, budget=2, shutdown_grace_seconds=10)
    with running(sqs, config, handler, job_cost=cost) as consumer:
        sqs.send_message(QueueUrl=queue_pair[0], MessageBody="cheap")
        wait_for(lambda: started == ["cheap"])
        # Room for one more cheap job: a dear one is received and waits for budget.
        sqs.send_message(QueueUrl=queue_pair[0], MessageBody="dear")
        wait_for(lambda: consumer.in_flight == 2)
        assert started == ["cheap"]
        consumer.shutdown()
        gate.set()
        wait_for(lambda: consumer.in_flight == 0)
    # The waiting job never started and went straight back to the queue.
    assert started == ["cheap"]
    wait_for(lambda: queue_counts(sqs, queue_pair[0]) == (1, 0))


def test_redelivered_says_whether_an_earlier_attempt_may_have_run() -> None:
    def ctx(receive_count: int, **attributes: str) -> JobContext:
        return JobContext("m", "r", "{}", receive_count, dict(attributes))

    assert not ctx(1).redelivered
    assert ctx(2).redelivered
    assert ctx(1, **{"exportpipe-error-reason": "x"}).redelivered
    assert ctx(1, **{"exportpipe-redriven": "1"}).redelivered
    assert not ctx(1, **{"tenant": "t"}).redelivered


def test_send_batch_resends_only_entries_that_failed_on_sqs_side() -> None:
    import boto3
    from botocore.stub import Stubber

    from exportpipe.common.sqs import send_batch

    client = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    entries = [{"Id": str(i), "ReceiptHandle": f"rh{i}"} for i in range(3)]
    with Stubber(client) as stub:
        stub.add_response(
            "delete_message_batch",
            {
                "Successful": [{"Id": "0"}],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "2", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"},
                ],
            },
            {"QueueUrl": url, "Entries": entries},
        )
        stub.add_response(
            "delete_message_batch",
            {"Successful": [{"Id": "1"}], "Failed": []},
            {"QueueUrl": url, "Entries": [entries[1]]},
        )
        outcome = send_batch(client.delete_message_batch, queue_url=url, entries=entries)
        stub.assert_no_pending_responses()
    assert outcome.calls == 2
    assert outcome.unresolved == []
    assert [f["Id"] for f in outcome.rejected] == ["2"]


def test_receive_sizes_follow_the_cost_of_the_last_batch(
    sqs: Any, queue_pair: tuple[str, str]
) -> None:
    """Before any cost is known one message; after cheap ones as many as fit."""
    calls = _calls(sqs)
    done: list[str] = []
    sqs.send_message_batch(
        QueueUrl=queue_pair[0],
        Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(10)],
    )
    config = _config(queue_pair, concurrency=10, budget=100)
    with running(sqs, config, lambda ctx: done.append(ctx.body), job_cost=lambda _ctx: 10):
        wait_for(lambda: len(done) == 10)
    asked = [p["MaxNumberOfMessages"] for op, p in calls if op == "ReceiveMessage"]
    assert asked[0] == 1
    assert max(asked) >= 9  # all the budget and slots left (one may still be running)
