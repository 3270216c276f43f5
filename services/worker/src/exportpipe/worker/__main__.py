"""``exportpipe-worker``: consume SQS 2 and run each download job until SIGTERM.

``exportpipe-worker --self-check`` only checks that the task can start: settings load,
and the scratch directory and heartbeat file are writable (the release workflow runs
it as a one-off task of each new task definition before any job reaches it).
"""

from __future__ import annotations

import os
import sys
import tempfile

from exportpipe.common.completion import build_tracking
from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.retry import aws_client
from exportpipe.common.settings import load_settings
from exportpipe.common.sqs import ConsumerConfig, QueueConsumer, run_consumer
from exportpipe.worker.handler import JobHandler, job_cost
from exportpipe.worker.lifetime import TaskLifetime
from exportpipe.worker.pipeline import Pipeline
from exportpipe.worker.protection import TaskProtection
from exportpipe.worker.settings import WorkerSettings

__all__ = ["build_consumer", "main", "self_check"]


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


def self_check(settings: WorkerSettings) -> list[str]:
    """What keeps this task from working, as messages (empty: it can start)."""
    problems = []
    try:
        with tempfile.TemporaryFile(dir=settings.spool_dir) as spool:
            spool.write(b"self-check")
    except OSError as exc:
        problems.append(f"spool_dir {settings.spool_dir} is not writable: {exc.strerror}")
    if settings.heartbeat_file is not None:
        try:
            settings.heartbeat_file.touch()
        except OSError as exc:
            problems.append(
                f"heartbeat_file {settings.heartbeat_file} is not writable: {exc.strerror}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    """Load settings, consume until SIGTERM/SIGINT or the drain, return the exit code."""
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings(WorkerSettings)
    logger = get_logger("worker", level=settings.log_level)
    if args == ["--self-check"]:
        problems = self_check(settings)
        for problem in problems:
            logger.error("self-check failed", extra={"problem": problem})
        if not problems:
            logger.info("self-check passed", extra={"pid": os.getpid()})
        return 1 if problems else 0
    if args:
        logger.error("unknown arguments", extra={"arguments": args})
        return 2
    metrics = Metrics(
        namespace=settings.metrics_namespace,
        service="worker",
        flush_seconds=settings.metrics_flush_seconds,
    )
    lifetime = TaskLifetime(
        drain_after_seconds=settings.drain_after_minutes * 60,
        drain_grace_seconds=settings.drain_grace_minutes * 60,
        logger=logger,
    )
    protection = TaskProtection.from_env(
        minutes=settings.protection_minutes,
        logger=logger,
        deadline=lifetime.protection_deadline,
    )
    try:
        consumer = build_consumer(settings, logger=logger, metrics=metrics, protection=protection)
        lifetime.start(consumer.shutdown)
        return run_consumer(consumer, metrics=metrics)
    finally:
        lifetime.cancel()
        protection.close()


if __name__ == "__main__":
    sys.exit(main())
