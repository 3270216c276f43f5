"""The worker's stack: its service, released by the worker team."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from exportpipe.infra.config import InfraConfig
from exportpipe.infra.image_repository import released_image
from exportpipe.infra.shared_stack import SharedResources
from exportpipe.infra.worker_service import WorkerService

__all__ = ["WorkerStack"]


class WorkerStack(Stack):
    """The worker service, its IAM and backlog scaling; image chosen by ``ImageTag``.

    Shared resources arrive as cross-stack references, so deploying this stack alone
    (``cdk deploy --exclusively``) never changes the shared stack or the orchestrator.

    Attributes:
        service: the :class:`WorkerService`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        shared: SharedResources,
        config: InfraConfig,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        image = released_image(self, "worker")
        # Imported by named output: both appear in wildcard IAM resources (see
        # SharedResources), the cluster in the task-protection ARN.
        bucket = s3.Bucket.from_bucket_name(self, "OutputBucket", shared.output("OutputBucketName"))
        cluster = ecs.Cluster.from_cluster_attributes(
            self, "Cluster", cluster_name=shared.output("ClusterName"), vpc=shared.cluster.vpc
        )
        self.service = WorkerService(
            self,
            "Worker",
            cluster=cluster,
            deployment=config.deployment,
            repository=image.repository,
            image_tag=image.tag,
            jobs=shared.jobs,
            bucket=bucket,
            output_prefix=config.output_prefix,
            table=shared.table,
            events_topic=shared.events_topic,
            download_allowed_hosts=config.download_allowed_hosts,
            subnets=shared.task_subnets,
            assign_public_ip=shared.assign_public_ip,
            log_retention=config.log_retention,
        )
