"""The shared stack's named outputs, and the service stacks' imports of them.

A service stack reads every shared value through an output whose name is fixed here,
never through a reference CDK generates (``ExportsOutput…``/``PublishOutput…`` names
change with any construct refactor, and a renamed output breaks every stack reading
it). The list only ever grows: removing or renaming a name breaks a deployed service
stack that still reads it (a test pins the names released so far).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, CfnParameter, Fn
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

__all__ = [
    "SHARED_OUTPUTS",
    "SHARED_REVISION_PARAMETER",
    "TASK_SUBNET_OUTPUTS",
    "ImportedQueue",
    "ImportedShared",
    "import_shared",
    "shared_revision",
]

SHARED_OUTPUTS: tuple[str, ...] = (
    # Released before the service stacks read everything by name (keep, in this order).
    "RequestsQueueUrl",
    "JobsQueueUrl",
    "OutputBucketName",
    "ClusterName",
    "TrackingTableName",
    "EventsTopicArn",
    "ExportApiTokenSecretArn",
    "OrchestratorRepositoryUri",
    "WorkerRepositoryUri",
    # Added for issue 17: append only.
    "RequestsQueueArn",
    "RequestsDlqUrl",
    "RequestsDlqArn",
    "JobsQueueArn",
    "JobsDlqUrl",
    "JobsDlqArn",
    "TrackingTableArn",
    "VpcId",
    "TaskSubnetA",
    "TaskSubnetB",
    "AlarmTopicArn",
    "RequestsQueueName",
    "JobsQueueName",
)
"""Every output name the shared stack publishes; append only."""

TASK_SUBNET_OUTPUTS = ("TaskSubnetA", "TaskSubnetB")
"""The two subnets (two AZs) tasks are placed in."""

SHARED_REVISION_PARAMETER = "SharedRevision"
"""The service stacks' parameter naming the shared stack's outputs revision.

CI passes a digest of the shared stack's current outputs on every service deploy. When
an output's value changes the digest changes, the task definition (which carries it
as a Docker label) is replaced and CloudFormation resolves every shared value again;
an unchanged template with unchanged parameters would be skipped as "no changes"."""


@dataclass(frozen=True)
class ImportedQueue:
    """A shared work queue and its DLQ, imported by ARN and URL."""

    queue: sqs.IQueue
    dlq: sqs.IQueue


@dataclass(frozen=True)
class ImportedShared:
    """The shared resources as one service stack sees them."""

    cluster: ecs.ICluster
    task_subnets: ec2.SubnetSelection
    requests: ImportedQueue
    jobs: ImportedQueue
    bucket: s3.IBucket
    table: dynamodb.ITable
    events_topic: sns.ITopic
    api_token: secretsmanager.ISecret
    alarm_topic: sns.ITopic


def import_shared(scope: Construct, *, stack_name: str) -> ImportedShared:
    """Import every shared resource into ``scope``'s stack from the named outputs."""

    def out(name: str) -> str:
        if name not in SHARED_OUTPUTS:
            raise KeyError(f"{name} is not a shared output (exportpipe.infra.shared_outputs)")
        return Fn.get_stack_output(stack_name, name)

    # Names come from their own outputs: deriving them with Fn::Split would work in
    # CloudFormation, but cfn-lint does not accept Fn::GetStackOutput inside Fn::Split.
    def queue(prefix: str) -> ImportedQueue:
        return ImportedQueue(
            queue=sqs.Queue.from_queue_attributes(
                scope,
                f"{prefix}Queue",
                queue_arn=out(f"{prefix}QueueArn"),
                queue_url=out(f"{prefix}QueueUrl"),
                queue_name=out(f"{prefix}QueueName"),
            ),
            dlq=sqs.Queue.from_queue_attributes(
                scope,
                f"{prefix}Dlq",
                queue_arn=out(f"{prefix}DlqArn"),
                queue_url=out(f"{prefix}DlqUrl"),
            ),
        )

    vpc = ec2.Vpc.from_vpc_attributes(
        scope, "Vpc", vpc_id=out("VpcId"), availability_zones=Fn.get_azs()
    )
    # Only the VPC id is used (the task security group); subnets are passed explicitly.
    Annotations.of(vpc).acknowledge_warning(
        "@aws-cdk/aws-ec2:vpcAttributeIsListTokenavailabilityZones",
        "Tasks are placed in the explicit TaskSubnetIds; nothing selects subnets by AZ.",
    )
    subnets = []
    for name in TASK_SUBNET_OUTPUTS:
        subnet = ec2.Subnet.from_subnet_id(scope, name, out(name))
        Annotations.of(subnet).acknowledge_warning(
            "@aws-cdk/aws-ec2:noSubnetRouteTableId",
            "Only the subnet id is used, for task placement; no route is read or added.",
        )
        subnets.append(subnet)
    cluster = ecs.Cluster.from_cluster_attributes(
        scope, "Cluster", cluster_name=out("ClusterName"), vpc=vpc, security_groups=[]
    )
    return ImportedShared(
        cluster=cluster,
        task_subnets=ec2.SubnetSelection(subnets=subnets),
        requests=queue("Requests"),
        jobs=queue("Jobs"),
        bucket=s3.Bucket.from_bucket_name(scope, "OutputBucket", out("OutputBucketName")),
        table=dynamodb.Table.from_table_name(scope, "TrackingTable", out("TrackingTableName")),
        events_topic=sns.Topic.from_topic_arn(scope, "EventsTopic", out("EventsTopicArn")),
        api_token=secretsmanager.Secret.from_secret_complete_arn(
            scope, "ExportApiToken", out("ExportApiTokenSecretArn")
        ),
        alarm_topic=sns.Topic.from_topic_arn(scope, "AlarmTopic", out("AlarmTopicArn")),
    )


def shared_revision(scope: Construct) -> str:
    """Declare the stack's ``SharedRevision`` parameter and return its value."""
    return CfnParameter(
        scope,
        SHARED_REVISION_PARAMETER,
        type="String",
        default="initial",
        description=(
            "Digest of the shared stack's outputs (CI: .ci/shared-revision); a new value "
            "re-resolves every shared value this stack reads"
        ),
        allowed_pattern=r"[A-Za-z0-9_.-]{1,64}",
    ).value_as_string
