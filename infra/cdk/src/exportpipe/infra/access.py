"""The IAM statements the services' task roles get, one builder per kind of access.

Actions are listed one by one (never ``service:*``) and every statement names its
resource; the only wildcards are inside resource ARNs where the names are only known
at run time (object keys under the output prefix, task ids), and those are
acknowledged where they are used.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns

from exportpipe.infra.work_queue import QueuePair

__all__ = [
    "CONSUME_ACTIONS",
    "TRACKING_ACTIONS",
    "consume_statements",
    "output_statements",
    "publish_statement",
    "send_statement",
    "tracking_statements",
]

CONSUME_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
"""A queue consumer's actions (the batch APIs are authorized by the same actions)."""

TRACKING_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
)
"""Item reads and writes of ``ExportTracker`` (TransactWriteItems is authorized per item
action); no Scan, no deletes, no table management."""


def consume_statements(queue: QueuePair, *, sid: str) -> list[iam.PolicyStatement]:
    """Receive, delete and change visibility on ``queue``; send to its DLQ.

    The consumer runtime dead-letters permanent failures itself (with the reason as
    message attributes), hence the DLQ send.
    """
    return [
        iam.PolicyStatement(
            sid=f"Consume{sid}", actions=list(CONSUME_ACTIONS), resources=[queue.queue.queue_arn]
        ),
        iam.PolicyStatement(
            sid=f"DeadLetter{sid}", actions=["sqs:SendMessage"], resources=[queue.dlq.queue_arn]
        ),
    ]


def send_statement(*queues: QueuePair, sid: str) -> iam.PolicyStatement:
    """Send to each of ``queues`` (not their DLQs)."""
    return iam.PolicyStatement(
        sid=sid, actions=["sqs:SendMessage"], resources=[q.queue.queue_arn for q in queues]
    )


def output_statements(
    *,
    bucket: s3.IBucket,
    objects_arn: str,
    output_prefix: str,
    actions: list[str],
    listing: bool,
) -> list[iam.PolicyStatement]:
    """Object ``actions`` under the output prefix, and optionally listing it.

    Args:
        bucket: the output bucket.
        objects_arn: ``bucket.arn_for_objects(output_prefix + "*")``, built by the
            caller so it can acknowledge the same value with cdk-nag.
        output_prefix: the key prefix; ``s3:ListBucket`` is conditioned on it.
        actions: object-level actions, e.g. ``s3:PutObject``.
        listing: also allow ``s3:ListBucket`` under the prefix and
            ``s3:ListBucketMultipartUploads`` (which has no prefix condition key) on the
            bucket, for finding other attempts' open uploads.
    """
    statements = [
        iam.PolicyStatement(sid="OutputObjects", actions=actions, resources=[objects_arn])
    ]
    if listing:
        statements += [
            iam.PolicyStatement(
                sid="ListOutputPrefix",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{output_prefix}*"]}},
            ),
            iam.PolicyStatement(
                sid="ListOpenUploads",
                actions=["s3:ListBucketMultipartUploads"],
                resources=[bucket.bucket_arn],
            ),
        ]
    return statements


def tracking_statements(table: dynamodb.ITable, *, index: str | None) -> list[iam.PolicyStatement]:
    """``TRACKING_ACTIONS`` on the tracking table, and Query on ``index`` if given."""
    statements = [
        iam.PolicyStatement(
            sid="TrackExports", actions=list(TRACKING_ACTIONS), resources=[table.table_arn]
        )
    ]
    if index is not None:
        statements.append(
            iam.PolicyStatement(
                sid="QueryActiveExports",
                actions=["dynamodb:Query"],
                resources=[f"{table.table_arn}/index/{index}"],
            )
        )
    return statements


def publish_statement(topic: sns.ITopic) -> iam.PolicyStatement:
    """Publish ``ExportCompleted`` on ``topic``."""
    return iam.PolicyStatement(
        sid="PublishEvents", actions=["sns:Publish"], resources=[topic.topic_arn]
    )
