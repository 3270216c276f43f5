"""``exportpipe-orchestrator``: consume SQS 1 until SIGTERM."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from exportpipe.common.completion import build_tracking
from exportpipe.common.observability import Metrics, get_logger, redact_url
from exportpipe.common.producer import BatchProducer
from exportpipe.common.retry import aws_client
from exportpipe.common.settings import load_settings
from exportpipe.common.sqs import ConsumerConfig, QueueConsumer, run_consumer
from exportpipe.common.stall import StallWatcher
from exportpipe.orchestrator.handler import PageHandler
from exportpipe.orchestrator.settings import OrchestratorSettings
from exportpipe.orchestrator.source import ExportSource, UnknownSource, create_source

__all__ = ["Orchestrator", "build", "consumer_config", "main"]

SERVICE = "orchestrator"


@dataclass
class Orchestrator:
    """A wired orchestrator: run ``consumer``; ``close()`` afterwards."""

    consumer: QueueConsumer
    handler: PageHandler
    producer: BatchProducer
    source: ExportSource
    metrics: Metrics
    stall_watcher: StallWatcher | None = None

    def close(self) -> None:
        """Release the producer's threads and the API connections."""
        if self.stall_watcher is not None:
            self.stall_watcher.stop()
        self.producer.close()
        self.source.close()


def consumer_config(settings: OrchestratorSettings) -> ConsumerConfig:
    """SQS 1 consumer timing (defaults from ``DEFAULT_DEPLOYMENT.requests_queue``)."""
    return ConsumerConfig.from_settings(
        settings, queue_url=settings.requests_queue_url, dlq_url=settings.requests_dlq_url
    )


def build(
    settings: OrchestratorSettings,
    *,
    sqs: Any | None = None,
    source: ExportSource | None = None,
    logger: Logger | None = None,
    metrics: Metrics | None = None,
    config: ConsumerConfig | None = None,
) -> Orchestrator:
    """Wire the consumer, handler, producer and source from ``settings``.

    The keyword arguments replace what would be built from ``settings`` (tests pass a
    client, a source or consumer timing of their own).

    Raises:
        UnknownSource: ``settings.export_source`` names no plug-in.
    """
    logger = logger or get_logger(SERVICE, level=settings.log_level)
    metrics = metrics or Metrics(
        namespace=settings.metrics_namespace,
        service=SERVICE,
        flush_seconds=settings.metrics_flush_seconds,
    )
    senders = settings.concurrency * settings.send_concurrency
    sqs = sqs or aws_client("sqs", max_pool_connections=senders + settings.concurrency + 4)
    source = source or create_source(settings)
    # One executor for every page in flight: each page still keeps at most
    # send_concurrency batches going, and the process at most `senders`.
    producer = BatchProducer(
        sqs,
        settings.jobs_queue_url,
        max_concurrency=settings.send_concurrency,
        executor=ThreadPoolExecutor(senders, thread_name_prefix="send"),
    )
    s3 = aws_client("s3")
    tracking = build_tracking(settings, s3=s3, metrics=metrics)
    handler = PageHandler(
        settings=settings,
        source=source,
        sqs=sqs,
        jobs=producer,
        logger=logger,
        metrics=metrics,
        s3=s3,
        tracking=tracking,
    )
    watcher = (
        StallWatcher(
            tracking.tracker,
            metrics,
            logger,
            stall_seconds=settings.stall_seconds,
            interval=settings.stall_check_seconds,
        )
        if tracking is not None
        else None
    )
    consumer = QueueConsumer(
        sqs, config or consumer_config(settings), handler, logger=logger, metrics=metrics
    )
    return Orchestrator(
        consumer=consumer,
        handler=handler,
        producer=producer,
        source=source,
        metrics=metrics,
        stall_watcher=watcher,
    )


def main() -> int:
    """Load settings, consume SQS 1 until SIGTERM/SIGINT, exit 0 after a clean shutdown."""
    settings = load_settings(OrchestratorSettings)
    logger = get_logger(SERVICE, level=settings.log_level)
    try:
        orchestrator = build(settings, logger=logger)
    except UnknownSource as exc:
        logger.error("cannot start", extra={"error": str(exc)})
        print(f"exportpipe-orchestrator: {exc}", file=sys.stderr)
        return 2
    logger.info(
        "orchestrator starting",
        extra={
            "export_source": settings.export_source,
            "export_api": redact_url(settings.export_api_url),
            "page_size": settings.page_size,
            "concurrency": settings.concurrency,
            "api_concurrency": settings.api_concurrency,
        },
    )
    if orchestrator.stall_watcher is not None:
        orchestrator.stall_watcher.start()
    try:
        return run_consumer(orchestrator.consumer, metrics=orchestrator.metrics)
    finally:
        orchestrator.close()


if __name__ == "__main__":
    sys.exit(main())
