"""The queue consumer runtime both services run on.

A :class:`QueueConsumer` long-polls one SQS queue and runs a handler per message on a
bounded pool of threads:

* **Backpressure.** It asks SQS only for as many messages as it has free slots, so it
  never holds a message it cannot start.
* **Heartbeat.** While a handler runs, its message's visibility is extended every
  ``heartbeat_seconds`` to ``visibility_timeout`` ahead, never past SQS's 12-hour
  ceiling. A job running longer than ``max_job_seconds`` (``EXPORTPIPE_MAX_JOB_SECONDS``,
  kept below that ceiling) has its :class:`~exportpipe.common.cancel.CancelToken`
  cancelled with :class:`~exportpipe.common.errors.JobDeadlineExceeded`: the handler
  raises it, so the job is refused (rejection record, tracking) and dead-lettered with
  its reason. A lost lease cancels with :class:`~exportpipe.common.errors.LeaseLost`.
* **Outcome by error type.** Return → delete (batched). ``RetryableError`` → the
  message comes back after a backoff visibility (or the upstream's ``Retry-After``,
  capped at ``retry_after_max_seconds``: a hostile header could otherwise hide the
  message for the rest of SQS's 12 hours on every receive).
  ``PermanentError`` → sent to the dead-letter queue with the reason in message
  attributes, then deleted. Any other exception is a bug: retried with backoff. On the
  last receive the redrive policy allows (:attr:`JobContext.final_attempt`), a
  retryable error or a bug is dead-lettered *with its reason* too, instead of being
  handed back for SQS's redrive to move without one: every retry loop ends with a
  named outcome.
* **Graceful shutdown.** :meth:`QueueConsumer.shutdown` stops receiving at once; jobs
  whose expected remaining time (see :meth:`JobContext.set_eta`) fits in the grace
  period may finish; the rest are cancelled and released (visibility 0) immediately so
  another consumer picks them up; deletes are flushed. A message returned by the last
  long poll is released too.
"""

from __future__ import annotations

import contextlib
import math
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import (
    ExportPipeError,
    JobDeadlineExceeded,
    JobReleased,
    LeaseLost,
    PermanentError,
    RetryableError,
)
from exportpipe.common.observability import Metrics, redact_text
from exportpipe.common.retry import call_aws

__all__ = [
    "RETRY_AFTER_MAX_SECONDS",
    "SQS_MAX_VISIBILITY_SECONDS",
    "ConsumerConfig",
    "ConsumerSettings",
    "JobContext",
    "QueueConsumer",
    "QueueDepth",
    "dead_letter_attributes",
    "queue_depth",
    "run_consumer",
]

SQS_MAX_VISIBILITY_SECONDS = 12 * 3600
RETRY_AFTER_MAX_SECONDS = 900.0
"""The longest an upstream's ``Retry-After`` may hide a message: 15 minutes, SQS's own
maximum message delay and the runtime's backoff ceiling. Longer asks are shortened."""
_BATCH = 10
_MAX_REASON_CHARS = 1000
_DELETE_LINGER = 0.1


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
        cls, settings: ConsumerSettings, *, queue_url: str, dlq_url: str
    ) -> ConsumerConfig:
        """The consumer configuration a service's settings describe."""
        return cls(
            queue_url=queue_url,
            dlq_url=dlq_url,
            concurrency=settings.concurrency,
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
        if not 0 < self.heartbeat_seconds < self.visibility_timeout:
            raise ValueError("heartbeat_seconds must be positive and below visibility_timeout")
        if not 0 < self.max_job_seconds < SQS_MAX_VISIBILITY_SECONDS:
            raise ValueError("max_job_seconds must be positive and below SQS's 12-hour ceiling")


@dataclass(eq=False)
class JobContext:
    """One received message, as its handler sees it.

    Handlers doing long work should call :meth:`check` between steps (it raises once the
    runtime cancelled the job, with the reason), pass :attr:`token` down to whatever
    blocks or sleeps, and call :meth:`set_eta` as they learn how long is left.

    ``final_attempt`` is true on the last receive the redrive policy allows: whatever
    the handler raises then (but a release) is dead-lettered, so a handler that keeps
    per-item records should record this failure as final.
    """

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    attributes: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)
    token: CancelToken = field(default_factory=CancelToken)
    final_attempt: bool = False
    log_keys: dict[str, str] = field(default_factory=dict)
    _eta_seconds: float | None = None
    _eta_set_at: float = 0.0

    @property
    def cancelled(self) -> bool:
        """True once the runtime cancelled this job (see :attr:`token`'s reason)."""
        return self.token.cancelled

    def check(self) -> None:
        """Raise the cancellation error if the runtime cancelled this job."""
        self.token.check()

    def set_eta(self, seconds: float | None) -> None:
        """Tell the runtime how many seconds this job still needs (``None``: unknown)."""
        self._eta_seconds, self._eta_set_at = seconds, time.monotonic()

    def eta(self, default: float | None) -> float | None:
        """Seconds left by the last :meth:`set_eta`, or ``default``."""
        if self._eta_seconds is None:
            return default
        return max(0.0, self._eta_seconds - (time.monotonic() - self._eta_set_at))

    def cancel(self, error: ExportPipeError) -> None:
        """Ask the handler to stop; :meth:`check` raises ``error`` from now on."""
        self.token.cancel(error)


@dataclass(eq=False)
class _InFlight:
    ctx: JobContext
    released: bool = False  # visibility handed back; the outcome must not touch SQS


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate message counts, as SQS reports them."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Every message the queue holds, whatever its state."""
        return self.visible + self.in_flight + self.delayed


_DEPTH_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    """The approximate visible, in-flight and delayed counts of ``queue_url``."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES.values())
    )["Attributes"]
    return QueueDepth(
        **{field: int(attrs.get(name, 0)) for field, name in _DEPTH_ATTRIBUTES.items()}
    )


def _finite(value: object) -> float | None:
    """``value`` as a finite number of seconds, or ``None`` (a hostile header can say NaN)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def dead_letter_attributes(
    error: BaseException, *, source_queue: str, receive_count: int
) -> dict[str, dict[str, str]]:
    """Message attributes that record why a message was dead-lettered."""
    reason = getattr(error, "reason", "unhandled_error")
    text = redact_text(str(error))[:_MAX_REASON_CHARS] or type(error).__name__

    def s(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    return {
        "exportpipe-error-type": s(type(error).__name__),
        "exportpipe-error-reason": s(reason),
        "exportpipe-error-message": s(text),
        "exportpipe-source-queue": s(source_queue),
        "exportpipe-receive-count": {"DataType": "Number", "StringValue": str(receive_count)},
        "exportpipe-failed-at": s(datetime.now(UTC).isoformat()),
    }


Handler = Callable[[JobContext], None]


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
    ) -> None:
        self._sqs = sqs
        self._config = config
        self._handler = handler
        self._log = logger
        self._metrics = metrics
        self._on_busy_change = on_busy_change
        self._lock = threading.Condition()
        self._inflight: dict[str, _InFlight] = {}
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._deletes: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="job")
        self._busy = False
        self._deadline: float | None = None
        self._stop_reason = "signal"

    # ------------------------------------------------------------------ public

    @property
    def config(self) -> ConsumerConfig:
        """This consumer's configuration."""
        return self._config

    @property
    def in_flight(self) -> int:
        """Messages currently held by this process."""
        with self._lock:
            return len(self._inflight)

    def run(self) -> None:
        """Consume until :meth:`shutdown` is called (from another thread or a signal).

        Returns after the shutdown sequence completed.
        """
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._delete_loop, name="deleter", daemon=True),
        ]
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        for t in (*threads, receiver):
            t.start()
        self._log.info(
            "consumer started",
            extra={"queue": self._queue_name, "concurrency": self._config.concurrency},
        )
        self._stopping.wait()
        self._drain()
        receiver.join(timeout=self._config.wait_time_seconds + 10)
        self._closed.set()
        self._deletes.put(None)
        for t in threads:
            t.join(timeout=30)
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

    def _free_slots(self) -> int:
        with self._lock:
            while len(self._inflight) >= self._config.concurrency and not self._stopping.is_set():
                self._lock.wait(timeout=1.0)
            return self._config.concurrency - len(self._inflight)

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
                    MaxNumberOfMessages=min(_BATCH, free),
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
            for raw in messages:
                self._start(raw)

    def _start(self, raw: dict[str, Any]) -> None:
        attrs = raw.get("Attributes", {})
        ctx = JobContext(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
            final_attempt=int(attrs.get("ApproximateReceiveCount", "1"))
            >= self._config.max_receive_count,
            attributes={
                k: v.get("StringValue", "") for k, v in raw.get("MessageAttributes", {}).items()
            },
        )
        with self._lock:
            self._inflight[ctx.message_id] = _InFlight(ctx)
        self._set_busy(True)
        self._metrics.add("MessagesReceived", queue=self._queue_name)
        self._pool.submit(self._run_job, ctx)

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
        except RetryableError as exc:
            if ctx.final_attempt:
                outcome = "dead_lettered"
                self._dead_letter(ctx, exc)
            else:
                outcome = "retried"
                self._retry_later(ctx, exc)
        except Exception as exc:
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
            if outcome == "succeeded":
                self._finish_success(ctx)
            with self._lock:
                self._inflight.pop(ctx.message_id, None)
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

    def _finish_success(self, ctx: JobContext) -> None:
        if self._is_released(ctx):
            # Another consumer may own the message now; its idempotency check acks it.
            return
        self._deletes.put((ctx.message_id, ctx.receipt_handle))

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
        delay = self._cap_visibility(ctx, delay)
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
                "error": redact_text(str(exc))[:_MAX_REASON_CHARS],
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
            self._deletes.put((ctx.message_id, ctx.receipt_handle))

    # ---------------------------------------------------------------- visibility

    def _cap_visibility(self, ctx: JobContext, seconds: float) -> float:
        age = time.monotonic() - ctx.received_at
        return max(0.0, min(seconds, SQS_MAX_VISIBILITY_SECONDS - age - 60))

    def _change_visibility(self, ctx: JobContext, seconds: int) -> None:
        try:
            call_aws(
                self._sqs.change_message_visibility,
                QueueUrl=self._config.queue_url,
                ReceiptHandle=ctx.receipt_handle,
                VisibilityTimeout=seconds,
            )
        except Exception as exc:
            # The message reappears when its current visibility runs out anyway.
            self._log.warning(
                "visibility change failed",
                extra={"message_id": ctx.message_id, "error": type(exc).__name__},
            )

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
            with contextlib.suppress(Exception):
                call_aws(
                    self._sqs.change_message_visibility,
                    QueueUrl=self._config.queue_url,
                    ReceiptHandle=raw["ReceiptHandle"],
                    VisibilityTimeout=0,
                )

    def _heartbeat_loop(self) -> None:
        cfg = self._config
        while not self._closed.wait(cfg.heartbeat_seconds):
            self._touch_liveness()
            with self._lock:
                running = [e.ctx for e in self._inflight.values() if not e.released]
            now = time.monotonic()
            extend: list[JobContext] = []
            for ctx in running:
                if now - ctx.received_at >= cfg.max_job_seconds:
                    ctx.cancel(
                        JobDeadlineExceeded(
                            f"job ran {int(now - ctx.received_at)} s, past the "
                            f"{int(cfg.max_job_seconds)} s limit (EXPORTPIPE_MAX_JOB_SECONDS)"
                        )
                    )
                # Still extended once cancelled: the handler needs its lease to write the
                # rejection and dead-letter; the cap keeps it under SQS's ceiling.
                extend.append(ctx)
            for start in range(0, len(extend), _BATCH):
                self._extend(extend[start : start + _BATCH])

    def _extend(self, batch: list[JobContext]) -> None:
        entries = [
            {
                "Id": str(i),
                "ReceiptHandle": ctx.receipt_handle,
                "VisibilityTimeout": int(
                    self._cap_visibility(ctx, self._config.visibility_timeout)
                ),
            }
            for i, ctx in enumerate(batch)
        ]
        try:
            response = call_aws(
                self._sqs.change_message_visibility_batch,
                QueueUrl=self._config.queue_url,
                Entries=entries,
            )
        except Exception as exc:
            self._log.warning("heartbeat failed", extra={"error": type(exc).__name__})
            return
        self._metrics.add("Heartbeats", len(batch) - len(response.get("Failed", [])))
        for failed in response.get("Failed", []):
            ctx = batch[int(failed["Id"])]
            if failed.get("SenderFault"):
                # The receipt handle is no longer valid: the lease is lost and another
                # consumer may already have the message. Stop rather than duplicate work.
                with self._lock:
                    entry = self._inflight.get(ctx.message_id)
                    if entry is not None:
                        entry.released = True
                ctx.cancel(LeaseLost("lease lost: visibility could not be extended"))
                self._log.warning(
                    "lease lost, job cancelled",
                    extra={"message_id": ctx.message_id, "code": failed.get("Code")},
                )

    # ------------------------------------------------------------------ deletes

    def _delete_loop(self) -> None:
        # Batches deletes: a batch goes out when it has 10 entries or its oldest entry
        # has waited _DELETE_LINGER seconds, so a finished message is never held long.
        pending: list[tuple[str, str]] = []
        oldest = 0.0
        while True:
            timeout = _DELETE_LINGER if not pending else oldest + _DELETE_LINGER - time.monotonic()
            try:
                item = self._deletes.get(timeout=max(0.0, timeout))
            except queue.Empty:
                item = ("", "")
            if item is not None and item[0]:
                if not pending:
                    oldest = time.monotonic()
                pending.append(item)
                if len(pending) < _BATCH and time.monotonic() - oldest < _DELETE_LINGER:
                    continue
            while pending:
                batch, pending = pending[:_BATCH], pending[_BATCH:]
                self._delete_batch(batch)
            if item is None:
                return

    def _delete_batch(self, batch: list[tuple[str, str]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": rh} for i, (_, rh) in enumerate(batch)]
        for _attempt in range(5):
            try:
                response = call_aws(
                    self._sqs.delete_message_batch, QueueUrl=self._config.queue_url, Entries=entries
                )
            except Exception as exc:
                self._log.error("delete failed", extra={"error": type(exc).__name__})
                return
            retry = [e for e in response.get("Failed", []) if not e.get("SenderFault")]
            self._metrics.add("MessagesDeleted", len(entries) - len(response.get("Failed", [])))
            if not retry:
                return
            ids = {f["Id"] for f in retry}
            entries = [e for e in entries if e["Id"] in ids]
            time.sleep(0.2 * (_attempt + 1))

    # ---------------------------------------------------------------- shutdown

    def _drain(self) -> None:
        cfg = self._config

        def deadline() -> float:
            # Re-read on every wait: a second shutdown() may have brought it in.
            return self._deadline if self._deadline is not None else time.monotonic()

        grace = max(0.0, deadline() - time.monotonic())
        with self._lock:
            running = [e.ctx for e in self._inflight.values() if not e.released]
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
                waiting = [e for e in self._inflight.values() if not e.released]
                if not waiting:
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
        if busy == self._busy or self._on_busy_change is None:
            self._busy = busy
            return
        self._busy = busy
        try:
            self._on_busy_change(busy)
        except Exception:
            self._log.exception("busy-state hook failed")


def run_consumer(consumer: QueueConsumer, *, metrics: Metrics | None = None) -> int:
    """Run ``consumer`` until SIGTERM or SIGINT, then shut down gracefully.

    Returns:
        The process exit code (0 after a clean shutdown).
    """

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        consumer.shutdown()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
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
