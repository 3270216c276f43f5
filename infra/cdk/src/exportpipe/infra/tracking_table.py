"""The export tracking table."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from exportpipe.common.tracking import ACTIVE_INDEX

__all__ = ["TrackingTable"]


class TrackingTable(Construct):
    """DynamoDB table (``pk``/``sk`` strings), on-demand, PITR, TTL on ``expires_at``.

    Its sparse global secondary index ``active`` (``active`` string, ``last_activity``
    number, all attributes) is the one :class:`exportpipe.common.tracking.ExportTracker`
    creates locally.

    Encrypted at rest with the AWS-owned key (the default), so readers need no KMS grant.

    Attributes:
        table: the table.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Sparse: only active exports carry ``active``; the stall watcher queries it.
        self.table.add_global_secondary_index(
            index_name=ACTIVE_INDEX,
            partition_key=dynamodb.Attribute(name="active", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="last_activity", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.ALL,
        )
