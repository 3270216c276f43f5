"""``exportpipe-worker``: consume SQS 2 and run each download job until SIGTERM."""

from __future__ import annotations

import sys

from exportpipe.common.completion import build_tracking
from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.retry import aws_client
from exportpipe.common.settings import load_settings
from exportpipe.common.sqs import ConsumerConfig, QueueConsumer, run_consumer
from exportpipe.worker.handler import JobHandler, job_cost
from exportpipe.worker.pipeline import Pipeline
from exportpipe.worker.protection import TaskProtection
from exportpipe.worker.settings import WorkerSettings

__all__ = ["build_consumer", "main"]


def build_consumer(
    settings: WorkerSettings, *, logger: object, metrics: Metrics, protection: TaskProtection
) -> QueueConsumer:
    """The SQS 2 consumer wired to the pipeline, with scale-in protection on busy."""
    sqs = aws_client("sqs")
    s3 = aws_client(
        "s3", max_pool_connections=settings.concurrency * (settings.upload_parts_in_flight + 2)
    )
    pipeline = Pipeline(settings, s3=s3, logger=logger)
    tracking = build_tracking(settings, s3=s3, metrics=metrics)
    config = ConsumerConfig.from_settings(
        settings,
        queue_url=settings.jobs_queue_url,
        dlq_url=settings.jobs_dlq_url,
        budget=settings.job_budget_bytes,
    )
    return QueueConsumer(
        sqs,
        config,
        JobHandler(pipeline, logger=logger, metrics=metrics, tracking=tracking),
        logger=logger,  # type: ignore[arg-type]
        metrics=metrics,
        on_busy_change=protection.on_busy_change,
        job_cost=job_cost(settings.job_memory()),
    )


def main() -> int:
    """Load settings, consume until SIGTERM/SIGINT, return the exit code."""
    settings = load_settings(WorkerSettings)
    logger = get_logger("worker", level=settings.log_level)
    metrics = Metrics(
        namespace=settings.metrics_namespace,
        service="worker",
        flush_seconds=settings.metrics_flush_seconds,
    )
    protection = TaskProtection.from_env(minutes=settings.protection_minutes, logger=logger)
    consumer = build_consumer(settings, logger=logger, metrics=metrics, protection=protection)
    try:
        return run_consumer(consumer, metrics=metrics)
    finally:
        protection.close()


if __name__ == "__main__":
    sys.exit(main())
