"""A consumer process for the SIGTERM test: one long, cancellable job per message.

Usage: python consumer_proc.py QUEUE_URL DLQ_URL JOB_SECONDS GRACE_SECONDS
Prints ``started <message-id>`` when a job starts and ``done`` when one finishes.
"""

from __future__ import annotations

import sys
import time

from exportpipe.common.observability import Metrics, get_logger
from exportpipe.common.retry import aws_client
from exportpipe.common.sqs import ConsumerConfig, JobContext, QueueConsumer, run_consumer


def main() -> int:
    queue_url, dlq_url, job_seconds, grace = sys.argv[1:5]

    def handler(ctx: JobContext) -> None:
        print(f"started {ctx.message_id}", flush=True)
        deadline = time.monotonic() + float(job_seconds)
        while time.monotonic() < deadline:
            ctx.check()
            time.sleep(0.05)
        print("done", flush=True)

    config = ConsumerConfig(
        queue_url=queue_url,
        dlq_url=dlq_url,
        concurrency=2,
        wait_time_seconds=1,
        visibility_timeout=30,
        heartbeat_seconds=5,
        shutdown_grace_seconds=float(grace),
        release_wait_seconds=2,
    )
    consumer = QueueConsumer(
        aws_client("sqs"),
        config,
        handler,
        logger=get_logger("consumer-proc"),
        metrics=Metrics(namespace="ExportPipe", service="consumer-proc"),
    )
    return run_consumer(consumer)


if __name__ == "__main__":
    sys.exit(main())
