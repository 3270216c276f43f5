"""The shared, stateful stack: network, cluster, queues, bucket, table, topics, alarms."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from exportpipe.infra.api_token import ApiTokenSecret
from exportpipe.infra.cluster import ServiceCluster
from exportpipe.infra.config import InfraConfig
from exportpipe.infra.event_topic import EventTopic
from exportpipe.infra.image_repository import REPOSITORY_NAMES, ImageRepository
from exportpipe.infra.monitoring import Monitoring
from exportpipe.infra.network import Network
from exportpipe.infra.output_bucket import OutputBucket
from exportpipe.infra.shared_outputs import (
    SHARED_OUTPUTS,
    TASK_SUBNET_OUTPUTS,
    ImportedShared,
    import_shared,
)
from exportpipe.infra.tracking_table import TrackingTable
from exportpipe.infra.work_queue import WorkQueue

__all__ = ["SharedResources", "SharedStack"]


@dataclass(frozen=True, kw_only=True)
class SharedResources:
    """What the service stacks take from the shared stack.

    Only plain values known at synthesis; every resource is imported in the consuming
    stack from the shared stack's fixed-name outputs (:meth:`import_into`), so no
    generated cross-stack reference ties a service stack to the shared stack's
    construct tree.
    """

    stack_name: str
    assign_public_ip: bool

    def import_into(self, scope: Construct) -> ImportedShared:
        """The shared resources imported into ``scope``'s stack."""
        return import_shared(scope, stack_name=self.stack_name)


class SharedStack(Stack):
    """Everything both services use and that outlives any one release of them.

    Attributes:
        resources: the :class:`SharedResources` handed to the service stacks.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        deployment = config.deployment
        network = Network(
            self,
            "Network",
            nat_gateways=config.nat_gateways,
            vpc_id=config.vpc_id,
            log_retention=config.log_retention,
        )
        cluster = ServiceCluster(self, "Cluster", vpc=network.vpc).cluster
        requests = WorkQueue(self, "Requests", timing=deployment.requests_queue)
        jobs = WorkQueue(self, "Jobs", timing=deployment.jobs_queue)
        bucket = OutputBucket(self, "Output").bucket
        table = TrackingTable(self, "Tracking").table
        events = EventTopic(self, "Events", display_name="exportpipe ExportCompleted").topic
        api_token = ApiTokenSecret(self, "ExportApiToken").secret
        repositories = {
            service: ImageRepository(
                self, f"{service.title()}Images", repository_name=name
            ).repository
            for service, name in REPOSITORY_NAMES.items()
        }
        monitoring = Monitoring(
            self,
            "Monitoring",
            queues={"Requests": requests, "Jobs": jobs},
            cluster_name=cluster.cluster_name,
            metrics_namespace="ExportPipe",
            alarm_email=config.alarm_email,
        )
        # The service stacks' EventBridge rules (deployment failed, task failed) publish
        # to the alarm topic; an imported topic cannot grant that itself.
        monitoring.alarm_topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgePublishesFleetEvents",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[monitoring.alarm_topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        task_subnet_ids = network.vpc.select_subnets(
            subnet_type=network.task_subnets.subnet_type
        ).subnet_ids
        if len(task_subnet_ids) < len(TASK_SUBNET_OUTPUTS):
            raise ValueError(f"tasks need {len(TASK_SUBNET_OUTPUTS)} subnets (two AZs)")
        self.resources = SharedResources(
            stack_name=self.stack_name, assign_public_ip=network.assign_public_ip
        )
        outputs = {
            "RequestsQueueUrl": requests.queue.queue_url,
            "JobsQueueUrl": jobs.queue.queue_url,
            "OutputBucketName": bucket.bucket_name,
            "ClusterName": cluster.cluster_name,
            "TrackingTableName": table.table_name,
            "EventsTopicArn": events.topic_arn,
            "ExportApiTokenSecretArn": api_token.secret_arn,
            "OrchestratorRepositoryUri": repositories["orchestrator"].repository_uri,
            "WorkerRepositoryUri": repositories["worker"].repository_uri,
            "RequestsQueueArn": requests.queue.queue_arn,
            "RequestsDlqUrl": requests.dlq.queue_url,
            "RequestsDlqArn": requests.dlq.queue_arn,
            "JobsQueueArn": jobs.queue.queue_arn,
            "JobsDlqUrl": jobs.dlq.queue_url,
            "JobsDlqArn": jobs.dlq.queue_arn,
            "TrackingTableArn": table.table_arn,
            "VpcId": network.vpc.vpc_id,
            # The first two: one per AZ in the VPC this stack creates.
            "TaskSubnetA": task_subnet_ids[0],
            "TaskSubnetB": task_subnet_ids[1],
            "AlarmTopicArn": monitoring.alarm_topic.topic_arn,
            "RequestsQueueName": requests.queue.queue_name,
            "JobsQueueName": jobs.queue.queue_name,
        }
        if tuple(outputs) != SHARED_OUTPUTS:
            raise ValueError("the shared stack must publish exactly SHARED_OUTPUTS, in order")
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
