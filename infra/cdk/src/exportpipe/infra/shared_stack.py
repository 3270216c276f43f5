"""The shared, stateful stack: network, cluster, queues, bucket, table, topics, alarms."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from exportpipe.infra.api_token import ApiTokenSecret
from exportpipe.infra.cluster import ServiceCluster
from exportpipe.infra.config import InfraConfig
from exportpipe.infra.event_topic import EventTopic
from exportpipe.infra.image_repository import REPOSITORY_NAMES, ImageRepository
from exportpipe.infra.monitoring import Monitoring
from exportpipe.infra.network import Network
from exportpipe.infra.output_bucket import OutputBucket
from exportpipe.infra.tracking_table import TrackingTable
from exportpipe.infra.work_queue import WorkQueue

__all__ = ["SharedResources", "SharedStack"]


@dataclass(frozen=True, kw_only=True)
class SharedResources:
    """What the service stacks take from the shared stack.

    Constructs passed here become cross-stack references (``Fn::GetStackOutput``, the
    ``weak`` references of ``cdk.json``: no exports lock the shared stack). Values that
    end up inside wildcard IAM resources are read by :meth:`output` from the shared
    stack's *named* outputs instead, so their cdk-nag acknowledgments name a stable
    reference rather than a generated one.
    """

    stack_name: str
    cluster: ecs.ICluster
    task_subnets: ec2.SubnetSelection
    assign_public_ip: bool
    requests: WorkQueue
    jobs: WorkQueue
    bucket: s3.IBucket
    table: dynamodb.ITable
    events_topic: sns.ITopic
    api_token: secretsmanager.ISecret

    def output(self, name: str) -> str:
        """The shared stack's output ``name``, read when the consuming stack deploys."""
        return Fn.get_stack_output(self.stack_name, name)


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
        Monitoring(
            self,
            "Monitoring",
            queues={"Requests": requests, "Jobs": jobs},
            cluster_name=cluster.cluster_name,
            metrics_namespace="ExportPipe",
            alarm_email=config.alarm_email,
        )
        self.resources = SharedResources(
            stack_name=self.stack_name,
            cluster=cluster,
            task_subnets=network.task_subnets,
            assign_public_ip=network.assign_public_ip,
            requests=requests,
            jobs=jobs,
            bucket=bucket,
            table=table,
            events_topic=events,
            api_token=api_token,
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
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
