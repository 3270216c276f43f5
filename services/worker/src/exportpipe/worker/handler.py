"""The queue handler: decode a ``DownloadJob`` message and run it through the pipeline."""

from __future__ import annotations

from typing import Any

from exportpipe.common.observability import Metrics
from exportpipe.common.schemas import DownloadJob, decode
from exportpipe.common.sqs import JobContext
from exportpipe.worker.pipeline import JobResult, Pipeline

__all__ = ["JobHandler"]


class JobHandler:
    """``QueueConsumer`` handler for SQS 2.

    Returning acknowledges the message; the pipeline's errors carry the outcome
    (retryable → retried later, permanent → dead-lettered with the reason).
    """

    def __init__(self, pipeline: Pipeline, *, logger: Any, metrics: Metrics) -> None:
        self._pipeline = pipeline
        self._log = logger
        self._metrics = metrics

    def __call__(self, ctx: JobContext) -> None:
        """Handle one message."""
        job = decode(ctx.body, DownloadJob)
        ctx.log_keys.update(
            {"export_id": job.export_id, "file_id": job.file_id, "job_id": job.job_id}
        )
        result = self._pipeline.run(job, cancelled=ctx.cancelled, set_eta=ctx.set_eta)
        self._record(result, ctx)

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
            },
        )
