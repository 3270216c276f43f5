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
