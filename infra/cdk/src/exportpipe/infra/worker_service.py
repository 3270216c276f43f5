"""The worker service: SQS 2 consumer streaming files into the output bucket."""

from __future__ import annotations

from aws_cdk import Arn, ArnComponents, ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from exportpipe.common.sizing import Deployment
from exportpipe.infra.access import (
    consume_statements,
    output_statements,
    publish_statement,
    tracking_statements,
)
from exportpipe.infra.backlog_scaling import BacklogScaling
from exportpipe.infra.fair_queues import fair_queue_widgets
from exportpipe.infra.nag import acknowledge, wildcard_resource_finding
from exportpipe.infra.queue_service import QueueService
from exportpipe.infra.work_queue import QueuePair

__all__ = ["WORKER_OBJECT_ACTIONS", "WorkerService"]

WORKER_OBJECT_ACTIONS = [
    "s3:PutObject",
    "s3:GetObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:PutObjectTagging",
]
"""Uploads (multipart, conditional), reading back manifests and heads, replacing a stale
uncommitted object or an old rejection marker, aborting other attempts' uploads, and
tagging resume checkpoints for the bucket's expiry rule (a PutObject with tags needs
``s3:PutObjectTagging`` as well)."""


class WorkerService(Construct):
    """Fargate Spot service that runs download jobs, scaled on SQS 2 backlog per task.

    IAM: consume SQS 2 and dead-letter to its DLQ; :data:`WORKER_OBJECT_ACTIONS` on
    objects under ``output_prefix`` and listing only that prefix; tracking-table item
    reads and writes; publish on the events topic (the worker that finishes an
    export's last file writes its manifest and event); and ECS task scale-in
    protection for tasks of its own cluster (the agent's
    ``$ECS_AGENT_URI/task-protection/v1/state`` calls ECS with the task role).

    Attributes:
        runtime: the underlying :class:`QueueService`.
        scaling: the :class:`BacklogScaling` policies.
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
        jobs: QueuePair,
        bucket: s3.IBucket,
        output_prefix: str,
        table: dynamodb.ITable,
        events_topic: sns.ITopic,
        download_allowed_hosts: str,
        subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        sizing = deployment.worker
        self.runtime = QueueService(
            self,
            "Runtime",
            cluster=cluster,
            sizing=sizing,
            repository=repository,
            image_tag=image_tag,
            shared_revision=shared_revision,
            command="exportpipe-worker",
            environment={
                "EXPORTPIPE_JOBS_QUEUE_URL": jobs.queue.queue_url,
                "EXPORTPIPE_JOBS_DLQ_URL": jobs.dlq.queue_url,
                "EXPORTPIPE_BUCKET": bucket.bucket_name,
                "EXPORTPIPE_OUTPUT_PREFIX": output_prefix,
                "EXPORTPIPE_TABLE": table.table_name,
                "EXPORTPIPE_EVENTS_TOPIC_ARN": events_topic.topic_arn,
                "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": download_allowed_hosts,
                "EXPORTPIPE_CONCURRENCY": str(sizing.concurrency),
                **(
                    {"EXPORTPIPE_JOB_BUDGET_BYTES": str(sizing.job_budget_bytes)}
                    if sizing.job_budget_bytes is not None
                    else {}
                ),
                "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": str(deployment.shutdown_grace_seconds),
            },
            subnets=subnets,
            assign_public_ip=assign_public_ip,
            log_retention=log_retention,
        )
        task = self.runtime.task_definition
        objects = bucket.arn_for_objects(f"{output_prefix}*")
        protected_tasks = Arn.format(
            ArnComponents(
                service="ecs",
                resource="task",
                resource_name=f"{cluster.cluster_name}/*",
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            ),
            Stack.of(self),
        )
        statements = [
            *consume_statements(jobs, sid="Jobs"),
            *output_statements(
                bucket=bucket,
                objects_arn=objects,
                output_prefix=output_prefix,
                actions=WORKER_OBJECT_ACTIONS,
                listing=True,
            ),
            *tracking_statements(table, index=None),
            publish_statement(events_topic),
            iam.PolicyStatement(
                sid="ScaleInProtection",
                actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                resources=[protected_tasks],
                conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
            ),
        ]
        for statement in statements:
            task.add_to_task_role_policy(statement)
        acknowledge(
            task,
            wildcard_resource_finding(task, objects),
            "Object keys are only known at run time; the grant is limited to the output "
            "prefix, and ListBucket is conditioned on the same prefix.",
        )
        acknowledge(
            task,
            wildcard_resource_finding(task, protected_tasks),
            "Task ids are only known at run time; the grant is limited to tasks of this "
            "cluster (resource and ecs:cluster condition), so a worker can protect itself.",
        )
        self.scaling = BacklogScaling(
            self,
            "Scaling",
            scaling=self.runtime.scaling,
            queue=jobs.queue,
            cluster_name=cluster.cluster_name,
            service_name=self.runtime.service.service_name,
            # Jobs are admitted by memory budget (ADR 0015): count them at the
            # deployment's scaling file size, as the planner does.
            jobs_per_task=deployment.worker_jobs_per_task,
            policy=deployment.worker_scaling,
        )
        # The shared dashboard cannot name this stack's service; the scaling signals
        # (what the policies act on) get a dashboard of their own, released with it.
        self.dashboard = cloudwatch.Dashboard(
            self, "ScalingDashboard", default_interval=Duration.hours(3)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Worker load ratio (1.0 = every job slot busy, nothing waiting)",
                left=[self.scaling.load_ratio],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=step.lower, label=f"scale out +{step.percent}%"
                    )
                    for step in deployment.worker_scaling.scale_out_steps
                ]
                + [
                    cloudwatch.HorizontalAnnotation(
                        value=deployment.worker_scaling.scale_in_below_ratio, label="scale in"
                    )
                ],
                width=16,
            ),
            cloudwatch.GraphWidget(
                title="Activation from zero", left=[self.scaling.activation], width=8
            ),
        )
        # Fair sharing (ADR 0018): is one tenant noisy, and do the others still flow?
        self.dashboard.add_widgets(
            *fair_queue_widgets(
                jobs.queue,
                name="SQS 2 (jobs)",
                alarm_seconds=deployment.jobs_queue.oldest_message_alarm_seconds,
            )
        )
