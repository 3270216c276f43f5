"""A work queue with its dead-letter queue, timed from the sizing module."""

from __future__ import annotations

from typing import Protocol

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from exportpipe.common.sizing import QueueTiming

__all__ = ["QueuePair", "WorkQueue"]


class QueuePair(Protocol):
    """A work queue and its DLQ, as the services use them: built here or imported."""

    @property
    def queue(self) -> sqs.IQueue: ...

    @property
    def dlq(self) -> sqs.IQueue: ...


class WorkQueue(Construct):
    """An SQS queue and its DLQ: SSE, TLS-only, redrive after ``max_receive_count``.

    The visibility timeout is the one the consumer's heartbeat keeps extending, so a
    running job stays invisible however long it takes, and a crashed consumer's job
    reappears within one timeout. The DLQ keeps messages 14 days, longer than the
    source queue, because SQS keeps a message's original enqueue time when it is
    dead-lettered.

    Attributes:
        queue: the work queue.
        dlq: its dead-letter queue.
        timing: the timing it was built from.
    """

    def __init__(self, scope: Construct, construct_id: str, *, timing: QueueTiming) -> None:
        super().__init__(scope, construct_id)
        self.timing = timing
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            retention_period=Duration.days(timing.dlq_retention_days),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Dead letters are evidence for an operator; deleting the stack keeps them.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            visibility_timeout=Duration.seconds(timing.visibility_timeout_seconds),
            retention_period=Duration.days(timing.retention_days),
            receive_message_wait_time=Duration.seconds(timing.wait_time_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=timing.max_receive_count
            ),
            # A construct rename or a stack deletion must not drop the messages waiting.
            removal_policy=RemovalPolicy.RETAIN,
        )
