"""A received message and its lease: the visibility that keeps it ours while it runs.

:class:`JobContext` is what a handler sees of its message. :class:`Heartbeat` extends
the leases of running jobs, ten per call, never past SQS's 12-hour ceiling; it cancels
a job that ran past ``max_job_seconds`` with
:class:`~exportpipe.common.errors.JobDeadlineExceeded` and one whose receipt handle
SQS no longer accepts with :class:`~exportpipe.common.errors.LeaseLost`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import ExportPipeError, JobDeadlineExceeded, LeaseLost
from exportpipe.common.observability import Metrics
from exportpipe.common.sqs.batching import BATCH_MAX, send_batch
from exportpipe.common.sqs.deadletters import EARLIER_ATTEMPT_ATTRIBUTES

__all__ = ["SQS_MAX_VISIBILITY_SECONDS", "Heartbeat", "JobContext", "cap_visibility"]

SQS_MAX_VISIBILITY_SECONDS = 12 * 3600


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
    def redelivered(self) -> bool:
        """True if an earlier attempt may have handled this message.

        SQS delivered it before (``ApproximateReceiveCount`` > 1), or it came back from
        the dead-letter queue (its attributes say so). Handlers use it to skip looking
        for an earlier attempt's leftovers on a first delivery.
        """
        return self.receive_count > 1 or not EARLIER_ATTEMPT_ATTRIBUTES.isdisjoint(self.attributes)

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


def cap_visibility(ctx: JobContext, seconds: float) -> float:
    """``seconds``, shortened so the message's visibility ends before SQS's ceiling."""
    age = time.monotonic() - ctx.received_at
    return max(0.0, min(seconds, SQS_MAX_VISIBILITY_SECONDS - age - 60))


class Heartbeat:
    """Extends the leases of running jobs; cancels those past their deadline or lease.

    Args:
        visibility_timeout: seconds each beat keeps a job invisible for.
        max_job_seconds: a job that has run this long is cancelled with
            :class:`JobDeadlineExceeded` (and still extended: its handler needs the
            lease to write the rejection and dead-letter it).
        on_lost: called with a job whose lease SQS refused, before it is cancelled, so
            the runtime stops acknowledging a message another consumer may now hold.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        visibility_timeout: int,
        max_job_seconds: float,
        on_lost: Callable[[JobContext], None],
        logger: Logger,
        metrics: Metrics,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._visibility_timeout = visibility_timeout
        self._max_job_seconds = max_job_seconds
        self._on_lost = on_lost
        self._log = logger
        self._metrics = metrics

    def beat(self, running: list[JobContext]) -> None:
        """Extend every job in ``running`` (ten per call)."""
        now = time.monotonic()
        for ctx in running:
            if now - ctx.received_at >= self._max_job_seconds:
                ctx.cancel(
                    JobDeadlineExceeded(
                        f"job ran {int(now - ctx.received_at)} s, past the "
                        f"{int(self._max_job_seconds)} s limit (EXPORTPIPE_MAX_JOB_SECONDS)"
                    )
                )
        for start in range(0, len(running), BATCH_MAX):
            self._extend(running[start : start + BATCH_MAX])

    def _extend(self, batch: list[JobContext]) -> None:
        entries = [
            {
                "Id": str(i),
                "ReceiptHandle": ctx.receipt_handle,
                "VisibilityTimeout": int(cap_visibility(ctx, self._visibility_timeout)),
            }
            for i, ctx in enumerate(batch)
        ]
        outcome = send_batch(
            self._sqs.change_message_visibility_batch,
            queue_url=self._queue_url,
            entries=entries,
            attempts=2,
        )
        if outcome.unresolved:
            self._log.warning("heartbeat failed", extra={"entries": len(outcome.unresolved)})
        self._metrics.add(
            "Heartbeats", len(batch) - len(outcome.rejected) - len(outcome.unresolved)
        )
        for failed in outcome.rejected:
            # The receipt handle is no longer valid: the lease is lost and another
            # consumer may already have the message. Stop rather than duplicate work.
            ctx = batch[int(failed["Id"])]
            self._on_lost(ctx)
            ctx.cancel(LeaseLost("lease lost: visibility could not be extended"))
            self._log.warning(
                "lease lost, job cancelled",
                extra={"message_id": ctx.message_id, "code": failed.get("Code")},
            )
