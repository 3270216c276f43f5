"""The consumer loop: receive, admit by budget, run handlers, map outcomes, shut down.

See the package docstring (:mod:`exportpipe.common.sqs`) for how it behaves.
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from exportpipe.common.errors import (
    JobReleased,
    PermanentError,
    RetryableError,
)
from exportpipe.common.observability import Metrics, redact_text
from exportpipe.common.retry import call_aws
from exportpipe.common.sqs.batching import BATCH_MAX, Outbox
from exportpipe.common.sqs.deadletters import dead_letter_attributes, error_text
from exportpipe.common.sqs.lease import (
    SQS_MAX_VISIBILITY_SECONDS,
    Heartbeat,
    JobContext,
    cap_visibility,
)

__all__ = [
    "RETRY_AFTER_MAX_SECONDS",
    "ConsumerConfig",
    "ConsumerSettings",
    "QueueConsumer",
    "run_consumer",
]

RETRY_AFTER_MAX_SECONDS = 900.0
"""The longest an upstream's ``Retry-After`` may hide a message: 15 minutes, SQS's own
maximum message delay and the runtime's backoff ceiling. Longer asks are shortened."""


class ConsumerSettings(Protocol):
    """The settings fields :meth:`ConsumerConfig.from_settings` reads."""

    @property
    def concurrency(self) -> int: ...
    @property
    def wait_time_seconds(self) -> int: ...
    @property
    def visibility_timeout_seconds(self) -> int: ...
    @property
    def heartbeat_seconds(self) -> float: ...
    @property
    def max_receive_count(self) -> int: ...
    @property
    def shutdown_grace_seconds(self) -> float: ...
    @property
    def heartbeat_file(self) -> Path | None: ...
    @property
    def max_job_seconds(self) -> float: ...


@dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    """How a consumer polls, heartbeats and shuts down.

    Attributes:
        queue_url / dlq_url: the queue consumed and its dead-letter queue.
        concurrency: handlers running at once in this process.
        wait_time_seconds: long-poll wait (20 in production; tests use less).
        visibility_timeout: seconds each heartbeat keeps a running job invisible for.
        heartbeat_seconds: heartbeat period; must be well under ``visibility_timeout``.
        max_receive_count: the redrive policy's maxReceiveCount; on that receive an
            unexpected exception dead-letters the message with its reason.
        budget: jobs run while the sum of their costs (the consumer's ``job_cost``) fits
            this; ``None``: every job costs one of ``concurrency`` slots.
        shutdown_grace_seconds: how long a job may take to finish after SIGTERM.
        release_wait_seconds: after releasing jobs, how long to wait for their handlers
            to notice and clean up (abort uploads) before exiting anyway.
        default_eta_seconds: assumed remaining time of a job that never called
            ``set_eta`` (``None``: unknown, so released at shutdown).
        max_job_seconds: cancel a job that has run this long (before SQS's ceiling),
            with :class:`JobDeadlineExceeded` (``EXPORTPIPE_MAX_JOB_SECONDS``).
        retry_base_seconds / retry_max_seconds: backoff visibility for retryable errors.
        retry_after_max_seconds: the longest ``Retry-After`` honoured (see
            :data:`RETRY_AFTER_MAX_SECONDS`).
        liveness_file: touched by the receive and heartbeat loops while they are alive;
            the container HEALTHCHECK fails when it goes stale.
    """

    queue_url: str
    dlq_url: str
    concurrency: int = 1
    budget: int | None = None
    wait_time_seconds: int = 20
    visibility_timeout: int = 180
    heartbeat_seconds: float = 60.0
    max_receive_count: int = 5
    shutdown_grace_seconds: float = 90.0
    release_wait_seconds: float = 15.0
    default_eta_seconds: float | None = None
    max_job_seconds: float = SQS_MAX_VISIBILITY_SECONDS - 15 * 60
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    retry_after_max_seconds: float = RETRY_AFTER_MAX_SECONDS
    liveness_file: Path | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ConsumerSettings,
        *,
        queue_url: str,
        dlq_url: str,
        budget: int | None = None,
    ) -> ConsumerConfig:
        """The consumer configuration a service's settings describe."""
        return cls(
            queue_url=queue_url,
            dlq_url=dlq_url,
            concurrency=settings.concurrency,
            budget=budget,
            wait_time_seconds=settings.wait_time_seconds,
            visibility_timeout=settings.visibility_timeout_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            max_receive_count=settings.max_receive_count,
            shutdown_grace_seconds=settings.shutdown_grace_seconds,
            liveness_file=settings.heartbeat_file,
            max_job_seconds=settings.max_job_seconds,
        )

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.budget is not None and self.budget < 1:
            raise ValueError("budget must be at least 1")
        if not 0 < self.heartbeat_seconds < self.visibility_timeout:
            raise ValueError("heartbeat_seconds must be positive and below visibility_timeout")
        if not 0 < self.max_job_seconds < SQS_MAX_VISIBILITY_SECONDS:
            raise ValueError("max_job_seconds must be positive and below SQS's 12-hour ceiling")


@dataclass(eq=False)
class _InFlight:
    ctx: JobContext
    cost: int = 1
    started: bool = False  # False: received, waiting for budget
    released: bool = False  # visibility handed back; the outcome must not touch SQS


def _finite(value: object) -> float | None:
    """``value`` as a finite number of seconds, or ``None`` (a hostile header can say NaN)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


Handler = Callable[[JobContext], None]
JobCost = Callable[[JobContext], int]


class QueueConsumer:
    """Consumes one SQS queue with bounded concurrency, heartbeats and clean shutdown."""

    def __init__(
        self,
        sqs: Any,
        config: ConsumerConfig,
        handler: Handler,
        *,
        logger: Logger,
        metrics: Metrics,
        on_busy_change: Callable[[bool], None] | None = None,
        job_cost: JobCost | None = None,
    ) -> None:
        self._sqs = sqs
        self._config = config
        self._handler = handler
        self._job_cost = job_cost
        self._log = logger
        self._metrics = metrics
        self._on_busy_change = on_busy_change
        self._lock = threading.Condition()
        self._inflight: dict[str, _InFlight] = {}
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._outbox = Outbox(sqs, config.queue_url, logger=logger, metrics=metrics)
        self._heartbeat = Heartbeat(
            sqs,
            config.queue_url,
            visibility_timeout=config.visibility_timeout,
            max_job_seconds=config.max_job_seconds,
            on_lost=self._lease_lost,
            logger=logger,
            metrics=metrics,
        )
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="job")
        self._used = 0  # budget held by started jobs
        self._estimate = config.budget or 1  # the dearest job of the last receive
        self._waiting: collections.deque[_InFlight] = collections.deque()
        self._busy = False
        self._deadline: float | None = None
        self._stop_reason = "signal"

    # ------------------------------------------------------------------ public

    @property
    def in_flight(self) -> int:
        """Messages currently held by this process."""
        with self._lock:
            return len(self._inflight)

    def run(self) -> None:
        """Consume until :meth:`shutdown` is called (from another thread or a signal).

        Returns after the shutdown sequence completed.
        """
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        self._outbox.start()
        heartbeat.start()
        receiver.start()
        self._log.info(
            "consumer started",
            extra={"queue": self._queue_name, "concurrency": self._config.concurrency},
        )
        self._stopping.wait()
        self._drain()
        receiver.join(timeout=self._config.wait_time_seconds + 10)
        self._closed.set()
        self._outbox.close()
        heartbeat.join(timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._set_busy(False)
        self._log.info("consumer stopped", extra={"queue": self._queue_name})

    def shutdown(self, *, grace_seconds: float | None = None, reason: str = "signal") -> None:
        """Begin graceful shutdown (safe from signal handlers and other threads).

        Args:
            grace_seconds: how long running jobs may take to finish (default: the
                config's ``shutdown_grace_seconds``). A later call may only shorten it:
                a SIGTERM during a long age-based drain brings the deadline in.
            reason: why, for the log (``signal``, ``max_age``, ...).
        """
        if grace_seconds is None:
            grace_seconds = self._config.shutdown_grace_seconds
        # No lock: this runs in signal handlers, possibly while the main thread holds it.
        deadline = time.monotonic() + grace_seconds
        if self._deadline is None or deadline < self._deadline:
            self._deadline, self._stop_reason = deadline, reason
        self._stopping.set()

    # --------------------------------------------------------------- receiving

    @property
    def _queue_name(self) -> str:
        return self._config.queue_url.rsplit("/", 1)[-1]

    def _room(self) -> int:
        """Messages that could start now (call with the lock held)."""
        cfg = self._config
        if self._waiting:
            return 0  # a received job waits for budget: receive nothing more
        room = cfg.concurrency - len(self._inflight)
        if cfg.budget is not None:
            # Costs are only known once received: ask for as many as fit at the dearest
            # cost of the last batch (one at a time before any), at least one while the
            # budget has room at all. A message that turns out dearer than that waits,
            # but only behind jobs that cost what the last batch did.
            free = cfg.budget - self._used
            estimate = self._estimate if self._job_cost is not None else 1
            room = min(room, max(free // estimate, 1 if free > 0 else 0))
        return max(0, room)

    def _free_slots(self) -> int:
        with self._lock:
            while self._room() <= 0 and not self._stopping.is_set():
                self._lock.wait(timeout=1.0)
            return self._room()

    def _cost(self, ctx: JobContext) -> int:
        budget = self._config.budget
        if budget is None or self._job_cost is None:
            return 1
        try:
            cost = int(self._job_cost(ctx))
        except Exception:  # a malformed body: its handler rejects it quickly
            cost = 1
        # A job dearer than the whole budget still runs, alone.
        return max(1, min(cost, budget))

    def _fits(self, cost: int) -> bool:
        budget = self._config.budget
        running = len(self._inflight) - len(self._waiting)
        if running >= self._config.concurrency:
            return False
        return budget is None or self._used == 0 or self._used + cost <= budget

    def _receive_loop(self) -> None:
        cfg = self._config
        while not self._stopping.is_set():
            self._touch_liveness()
            free = self._free_slots()
            if self._stopping.is_set() or free <= 0:
                continue
            try:
                response = call_aws(
                    self._sqs.receive_message,
                    QueueUrl=cfg.queue_url,
                    MaxNumberOfMessages=min(BATCH_MAX, free),
                    WaitTimeSeconds=cfg.wait_time_seconds,
                    VisibilityTimeout=cfg.visibility_timeout,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:  # keep polling: a dead receiver would stall the task
                self._log.error("receive failed", extra={"error": redact_text(repr(exc))[:300]})
                self._stopping.wait(5.0)
                continue
            messages = response.get("Messages", [])
            if self._stopping.is_set():
                self._release_raw(messages)
                break
            entries = [self._entry(raw) for raw in messages]
            if not entries:
                continue
            with self._lock:
                self._estimate = max(e.cost for e in entries)
                for entry in entries:
                    self._inflight[entry.ctx.message_id] = entry
                    self._waiting.append(entry)
            # Busy before any of them can start (and finish, and report idle).
            self._set_busy(True)
            self._metrics.add("MessagesReceived", len(entries), queue=self._queue_name)
            with self._lock:
                self._admit()

    def _entry(self, raw: dict[str, Any]) -> _InFlight:
        receive_count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        ctx = JobContext(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            receive_count=receive_count,
            final_attempt=receive_count >= self._config.max_receive_count,
            attributes={
                k: v.get("StringValue", "") for k, v in raw.get("MessageAttributes", {}).items()
            },
        )
        return _InFlight(ctx, cost=self._cost(ctx))

    def _admit(self) -> None:
        """Start waiting jobs, oldest first, while they fit (call with the lock held)."""
        while self._waiting and not self._stopping.is_set():
            entry = self._waiting[0]
            if entry.released:
                self._waiting.popleft()
                continue
            if not self._fits(entry.cost):
                return
            self._waiting.popleft()
            entry.started = True
            self._used += entry.cost
            self._pool.submit(self._run_job, entry.ctx)

    # ---------------------------------------------------------------- handling

    def _run_job(self, ctx: JobContext) -> None:
        started = time.monotonic()
        outcome = "failed"
        try:
            self._handler(ctx)
            outcome = "succeeded"
        except PermanentError as exc:
            outcome = "dead_lettered"
            self._dead_letter(ctx, exc)
        except JobReleased:
            outcome = "released"
            self._release(ctx)
        except Exception as exc:  # retryable, or unexpected (and retried the same way)
            if not isinstance(exc, RetryableError):
                self._log.exception(
                    "handler failed unexpectedly",
                    extra={"message_id": ctx.message_id, **ctx.log_keys},
                )
            if ctx.final_attempt:
                outcome = "dead_lettered"
                self._dead_letter(ctx, exc)
            else:
                outcome = "retried"
                self._retry_later(ctx, exc)
        finally:
            # Once released, another consumer may own the message: its idempotency check
            # acknowledges it.
            if outcome == "succeeded" and not self._is_released(ctx):
                self._outbox.delete(ctx.message_id, ctx.receipt_handle)
            with self._lock:
                entry = self._inflight.pop(ctx.message_id, None)
                if entry is not None:
                    self._used -= entry.cost
                self._admit()
                idle = not self._inflight
                self._lock.notify_all()
            if idle:
                self._set_busy(False)
            self._metrics.add(
                "JobSeconds", time.monotonic() - started, "Seconds", queue=self._queue_name
            )
            self._metrics.add(f"Jobs_{outcome}", queue=self._queue_name)

    def _is_released(self, ctx: JobContext) -> bool:
        with self._lock:
            entry = self._inflight.get(ctx.message_id)
            return entry is None or entry.released

    def _retry_later(self, ctx: JobContext, exc: BaseException) -> None:
        if self._is_released(ctx):
            return
        cfg = self._config
        retry_after = _finite(getattr(exc, "retry_after", None))
        if retry_after is not None:
            delay = max(0.0, min(retry_after, cfg.retry_after_max_seconds))
        else:
            ceiling = min(
                cfg.retry_max_seconds, cfg.retry_base_seconds * 2 ** (ctx.receive_count - 1)
            )
            delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto
        delay = cap_visibility(ctx, delay)
        self._log.warning(
            "job failed, will retry",
            extra={
                "message_id": ctx.message_id,
                "reason": getattr(exc, "reason", "unhandled_error"),
                "error": redact_text(str(exc))[:300],
                "retry_in_seconds": round(delay, 1),
                "receive_count": ctx.receive_count,
                **ctx.log_keys,
            },
        )
        self._change_visibility(ctx, math.ceil(delay))

    def _dead_letter(self, ctx: JobContext, exc: BaseException) -> None:
        if self._is_released(ctx):
            return  # someone else holds the message now; do not record a duplicate
        cfg = self._config
        reason = getattr(exc, "reason", "unhandled_error")
        self._log.error(
            "job failed permanently, dead-lettering",
            extra={
                "message_id": ctx.message_id,
                "reason": reason,
                "error": error_text(exc),
                "receive_count": ctx.receive_count,
                **ctx.log_keys,
            },
        )
        try:
            call_aws(
                self._sqs.send_message,
                QueueUrl=cfg.dlq_url,
                MessageBody=ctx.body or "<empty>",
                MessageAttributes=dead_letter_attributes(
                    exc, source_queue=cfg.queue_url, receive_count=ctx.receive_count
                ),
            )
        except Exception:
            # Could not record it: leave the message to be redelivered, never drop it.
            self._log.exception("dead-letter send failed", extra={"message_id": ctx.message_id})
            self._change_visibility(ctx, int(cfg.retry_base_seconds))
            return
        self._metrics.add("DeadLettered", queue=self._queue_name, reason=reason)
        if not self._is_released(ctx):
            self._outbox.delete(ctx.message_id, ctx.receipt_handle)

    # ---------------------------------------------------------------- visibility

    def _change_visibility(self, ctx: JobContext, seconds: int) -> None:
        # Batched with other jobs' changes; if it fails, the message reappears when its
        # current visibility runs out anyway.
        self._outbox.change_visibility(ctx.message_id, ctx.receipt_handle, seconds)

    def _release(self, ctx: JobContext) -> None:
        with self._lock:
            entry = self._inflight.get(ctx.message_id)
            if entry is None or entry.released:
                return
            entry.released = True
        self._change_visibility(ctx, 0)
        self._metrics.add("MessagesReleased", queue=self._queue_name)

    def _release_raw(self, messages: Iterable[dict[str, Any]]) -> None:
        for raw in messages:
            self._outbox.change_visibility(raw.get("MessageId", ""), raw["ReceiptHandle"], 0)

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self._config.heartbeat_seconds):
            self._touch_liveness()
            with self._lock:
                running = [e.ctx for e in self._inflight.values() if not e.released]
            self._heartbeat.beat(running)

    def _lease_lost(self, ctx: JobContext) -> None:
        with self._lock:
            entry = self._inflight.get(ctx.message_id)
            if entry is not None:
                entry.released = True

    # ---------------------------------------------------------------- shutdown

    def _drain(self) -> None:
        cfg = self._config

        def deadline() -> float:
            # Re-read on every wait: a second shutdown() may have brought it in.
            return self._deadline if self._deadline is not None else time.monotonic()

        grace = max(0.0, deadline() - time.monotonic())
        with self._lock:
            # Received but never started: hand them straight back.
            never_started = [e.ctx for e in self._waiting]
            self._waiting.clear()
            for ctx in never_started:
                self._inflight.pop(ctx.message_id, None)
            self._lock.notify_all()
            running = [e.ctx for e in self._inflight.values() if not e.released]
        for ctx in never_started:
            self._change_visibility(ctx, 0)
        # A job of unknown remaining time is released at once under the short signal
        # grace; a longer (age-based) drain lets it try, and releases it at the deadline.
        long_drain = grace > cfg.shutdown_grace_seconds
        to_release = []
        for ctx in running:
            eta = ctx.eta(cfg.default_eta_seconds)
            if (eta is None and not long_drain) or (eta is not None and eta > grace):
                to_release.append(ctx)
        self._log.info(
            "shutting down",
            extra={
                "reason": self._stop_reason,
                "grace_seconds": round(grace),
                "running": len(running),
                "releasing": len(to_release),
            },
        )
        for ctx in to_release:
            self._cancel_and_release(ctx)
        with self._lock:
            while self._inflight and time.monotonic() < deadline():
                if all(e.released for e in self._inflight.values()):
                    break
                self._lock.wait(timeout=min(1.0, max(0.0, deadline() - time.monotonic())))
            late = [e.ctx for e in self._inflight.values() if not e.released]
        for ctx in late:
            self._cancel_and_release(ctx)
        # Released handlers get a moment to notice and clean up (abort uploads).
        release_deadline = time.monotonic() + cfg.release_wait_seconds
        with self._lock:
            while self._inflight and time.monotonic() < release_deadline:
                self._lock.wait(timeout=0.5)
            leftover = len(self._inflight)
        if leftover:
            self._log.warning("handlers still running at exit", extra={"count": leftover})

    def _cancel_and_release(self, ctx: JobContext) -> None:
        ctx.cancel(JobReleased("released at shutdown; another consumer will take it"))
        self._release(ctx)

    def _touch_liveness(self) -> None:
        if self._config.liveness_file is not None:
            with contextlib.suppress(OSError):
                self._config.liveness_file.touch()

    def _set_busy(self, busy: bool) -> None:
        changed = busy != self._busy
        self._busy = busy
        if not changed or self._on_busy_change is None:
            return
        try:
            self._on_busy_change(busy)
        except Exception:
            self._log.exception("busy-state hook failed")


def run_consumer(consumer: QueueConsumer, *, metrics: Metrics | None = None) -> int:
    """Run ``consumer`` until SIGTERM or SIGINT, then shut down gracefully.

    Returns:
        The process exit code (0 after a clean shutdown).
    """
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: consumer.shutdown()) for sig in signals}
    if metrics is not None:
        metrics.start()
    try:
        consumer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if metrics is not None:
            metrics.stop()
    return 0
