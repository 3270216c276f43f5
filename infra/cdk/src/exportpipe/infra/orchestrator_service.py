"""The orchestrator service: SQS 1 consumer, Export API client, SQS 2 producer."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from exportpipe.common.sizing import Deployment
from exportpipe.common.tracking import ACTIVE_INDEX
from exportpipe.infra.access import (
    consume_statements,
    output_statements,
    publish_statement,
    send_statement,
    tracking_statements,
)
from exportpipe.infra.nag import acknowledge, wildcard_resource_finding
from exportpipe.infra.queue_service import QueueService
from exportpipe.infra.work_queue import QueuePair

__all__ = ["ORCHESTRATOR_OBJECT_ACTIONS", "ORCHESTRATOR_READ_ACTIONS", "OrchestratorService"]

ORCHESTRATOR_OBJECT_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload"]
"""Writing an export's completion manifest (multipart), and nothing else."""

ORCHESTRATOR_READ_ACTIONS = ["s3:GetObject"]
"""Reading the per-file manifests the completion manifest is built from."""


class OrchestratorService(Construct):
    """On-demand Fargate service that turns export requests into download jobs.

    IAM: consume SQS 1 and dead-letter to its DLQ; send to SQS 1 (the next page of an
    export is a new message) and SQS 2. For export tracking (``exportpipe.common``'s
    tracker, stall watcher and completer, which the orchestrator runs after each page):
    tracking-table item reads and writes plus Query on its ``active`` index, put and
    get of objects under ``output_prefix`` (the completion manifest) and publish on
    the events topic. The Export API token comes from Secrets Manager as
    ``EXPORTPIPE_EXPORT_API_TOKEN``.

    Scaling: ``min_tasks``..``max_tasks`` of the sizing; one more task after one period
    with more than ``orchestrator_scale_out_backlog`` visible requests, one fewer once
    SQS 1 stayed empty for ``orchestrator_scale_in_evaluation_periods``.

    Attributes:
        runtime: the underlying :class:`QueueService`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        deployment: Deployment,
        repository: ecr.IRepository,
        image_tag: str,
        shared_revision: str,
        requests: QueuePair,
        jobs: QueuePair,
        bucket: s3.IBucket,
        output_prefix: str,
        table: dynamodb.ITable,
        events_topic: sns.ITopic,
        api_token: secretsmanager.ISecret,
        export_api_url: str,
        subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        sizing = deployment.orchestrator
        self.runtime = QueueService(
            self,
            "Runtime",
            cluster=cluster,
            sizing=sizing,
            repository=repository,
            image_tag=image_tag,
            shared_revision=shared_revision,
            command="exportpipe-orchestrator",
            environment={
                "EXPORTPIPE_REQUESTS_QUEUE_URL": requests.queue.queue_url,
                "EXPORTPIPE_REQUESTS_DLQ_URL": requests.dlq.queue_url,
                "EXPORTPIPE_JOBS_QUEUE_URL": jobs.queue.queue_url,
                "EXPORTPIPE_BUCKET": bucket.bucket_name,
                "EXPORTPIPE_OUTPUT_PREFIX": output_prefix,
                "EXPORTPIPE_TABLE": table.table_name,
                "EXPORTPIPE_EVENTS_TOPIC_ARN": events_topic.topic_arn,
                "EXPORTPIPE_EXPORT_API_URL": export_api_url,
                "EXPORTPIPE_CONCURRENCY": str(sizing.concurrency),
                "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": str(deployment.shutdown_grace_seconds),
            },
            secrets={
                "EXPORTPIPE_EXPORT_API_TOKEN": ecs.Secret.from_secrets_manager(api_token),
            },
            subnets=subnets,
            assign_public_ip=assign_public_ip,
            log_retention=log_retention,
        )
        task = self.runtime.task_definition
        # The orchestrator writes only export manifests and reads only per-file ones.
        objects = bucket.arn_for_objects(f"{output_prefix}*/_manifest.json")
        file_manifests = bucket.arn_for_objects(f"{output_prefix}*/manifests/*")
        statements = [
            *consume_statements(requests, sid="Requests"),
            send_statement(requests, jobs, sid="SendRequestsAndJobs"),
            *tracking_statements(table, index=ACTIVE_INDEX),
            *output_statements(
                bucket=bucket,
                objects_arn=objects,
                output_prefix=output_prefix,
                actions=ORCHESTRATOR_OBJECT_ACTIONS,
                listing=False,
            ),
            iam.PolicyStatement(
                sid="ReadFileManifests",
                actions=ORCHESTRATOR_READ_ACTIONS,
                resources=[file_manifests],
            ),
            publish_statement(events_topic),
        ]
        for statement in statements:
            task.add_to_task_role_policy(statement)
        acknowledge(
            task,
            wildcard_resource_finding(task, objects),
            "Export ids are only known at run time; the grant is limited to writing "
            "{prefix}*/_manifest.json.",
        )
        acknowledge(
            task,
            wildcard_resource_finding(task, file_manifests),
            "Export ids are only known at run time; the grant is limited to reading "
            "{prefix}*/manifests/*.",
        )
        self._scale_on_requests(deployment, requests)

    def _scale_on_requests(self, deployment: Deployment, requests: QueuePair) -> None:
        timing = deployment.worker_scaling
        backlog = requests.queue.metric_approximate_number_of_messages_visible(
            period=Duration.seconds(timing.metric_period_seconds), statistic="Maximum"
        )
        scaling = self.runtime.scaling
        scaling.scale_on_metric(
            "ScaleOutOnRequests",
            metric=backlog,
            scaling_steps=[
                autoscaling.ScalingInterval(
                    upper=deployment.orchestrator_scale_out_backlog, change=0
                ),
                autoscaling.ScalingInterval(
                    lower=deployment.orchestrator_scale_out_backlog, change=1
                ),
            ],
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            cooldown=Duration.seconds(timing.scale_out_cooldown_seconds),
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
        scaling.scale_on_metric(
            "ScaleInWhenIdle",
            metric=backlog,
            # The lower alarm fires at <= 0.5, i.e. only when no request is waiting.
            scaling_steps=[
                autoscaling.ScalingInterval(upper=0.5, change=-1),
                autoscaling.ScalingInterval(lower=0.5, change=0),
            ],
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            evaluation_periods=deployment.orchestrator_scale_in_evaluation_periods,
            datapoints_to_alarm=deployment.orchestrator_scale_in_evaluation_periods,
            cooldown=Duration.seconds(timing.scale_in_cooldown_seconds),
            metric_aggregation_type=autoscaling.MetricAggregationType.MAXIMUM,
        )
