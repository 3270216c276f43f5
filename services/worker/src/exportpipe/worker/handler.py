"""The queue handler: decode a ``DownloadJob`` message and run it through the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from exportpipe.common.completion import Tracking
from exportpipe.common.errors import ExportPipeError, JobReleased, MessageError, PermanentError
from exportpipe.common.observability import Metrics, redact_text
from exportpipe.common.schemas import DownloadJob, decode
from exportpipe.common.sizing import JobMemory
from exportpipe.common.sqs import JobContext
from exportpipe.worker.pipeline import JobResult, Pipeline

__all__ = ["JobHandler", "job_cost"]


def job_cost(memory: JobMemory) -> Callable[[JobContext], int]:
    """The consumer's ``job_cost``: a job's memory need by its ``size_bytes`` (ADR 0015).

    Read before the job is admitted, so it only peeks at the one field: a body that is
    not a ``DownloadJob`` costs the worst case here and is refused by the handler.
    """

    def cost(ctx: JobContext) -> int:
        try:
            size = orjson.loads(ctx.body).get("size_bytes")
        except (orjson.JSONDecodeError, AttributeError):
            size = None
        valid = isinstance(size, int) and not isinstance(size, bool) and size >= 0
        return memory.need(size if valid else None)

    return cost


class JobHandler:
    """``QueueConsumer`` handler for SQS 2.

    Returning acknowledges the message; the pipeline's errors carry the outcome
    (retryable → retried later, permanent → dead-lettered with the reason).

    With tracking configured, each file's outcome (done, or rejected with its reason) is
    counted once in the tracking table before the message is acknowledged (one write, no
    read), and the export is completed if this was its last outstanding file. A failure to record is
    retryable: the redelivered job finds its manifest, is a duplicate, and records again
    (counting is idempotent). On the message's last allowed delivery
    (``ctx.final_attempt``) a retryable failure is final too: it gets its rejection record
    and is counted as rejected, so the export still completes.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        logger: Any,
        metrics: Metrics,
        tracking: Tracking | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._log = logger
        self._metrics = metrics
        self._tracking = tracking

    def __call__(self, ctx: JobContext) -> None:
        """Handle one message."""
        job = decode(ctx.body, DownloadJob)
        ctx.log_keys.update(
            {"export_id": job.export_id, "file_id": job.file_id, "job_id": job.job_id}
        )
        try:
            result = self._pipeline.run(
                job, cancel=ctx.token, set_eta=ctx.set_eta, redelivered=ctx.redelivered
            )
        except PermanentError as exc:
            if not isinstance(exc, MessageError):
                self._track(job, "rejected", detail=f"{exc.reason}: {redact_text(exc.message)}")
            raise
        except JobReleased:
            raise
        except Exception as exc:
            if ctx.final_attempt:
                # The runtime dead-letters this delivery: it is the file's last word.
                final = (
                    exc
                    if isinstance(exc, ExportPipeError)
                    else ExportPipeError(type(exc).__name__, reason="unhandled_error")
                )
                self._pipeline.reject(job, final)
                self._track(job, "rejected", detail=f"{final.reason}: {redact_text(final.message)}")
            raise
        self._record(result, ctx)
        self._track(job, "done", detail=result.manifest_key, size=result.source_bytes)

    def _track(self, job: DownloadJob, outcome: str, *, detail: str, size: int = 0) -> None:
        if self._tracking is None:
            return
        counted = self._tracking.tracker.count_file(
            job.export_id,
            job.file_id,
            "done" if outcome == "done" else "rejected",
            size=size,
            detail=detail,
            bucket=job.destination.bucket,
            prefix=job.destination.prefix,
            tenant=job.tenant,
        )
        # One write and no read for every file but the export's last; a file counted
        # before may have been the last of an attempt that died before completing.
        if counted in ("last", "already_counted"):
            self._tracking.completer.complete_if_done(job.export_id)

    def _record(self, result: JobResult, ctx: JobContext) -> None:
        if result.status == "duplicate":
            self._metrics.add("JobsDuplicate")
            self._log.info("job already committed, acknowledged", extra=dict(ctx.log_keys))
            return
        seconds = max(result.seconds, 1e-6)
        self._metrics.add("FilesCommitted")
        self._metrics.add("SourceBytes", result.source_bytes, "Bytes")
        self._metrics.add("OutputBytes", result.output_bytes, "Bytes")
        self._metrics.add("Records", result.records)
        self._log.info(
            "job committed",
            extra={
                **ctx.log_keys,
                "members": len(result.members),
                "source_bytes": result.source_bytes,
                "output_bytes": result.output_bytes,
                "records": result.records,
                "seconds": round(seconds, 3),
                "output_mb_per_s": round(result.output_bytes / seconds / 1e6, 1),
                "manifest": result.manifest_key,
                # resume figures (ADR 0020): where a ranged resume started, parts reused
                "resumed_from": result.resumed_from,
                "parts_reused": result.parts_reused,
                "complete_seconds": round(result.complete_seconds, 3),
            },
        )
