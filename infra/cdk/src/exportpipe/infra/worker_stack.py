"""The worker's stack: its service, released by the worker team."""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from exportpipe.infra.config import InfraConfig
from exportpipe.infra.fleet_alarms import FleetAlarms
from exportpipe.infra.image_repository import released_image
from exportpipe.infra.shared_outputs import shared_revision
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
        imported = shared.import_into(self)
        self.service = WorkerService(
            self,
            "Worker",
            cluster=imported.cluster,
            deployment=config.deployment,
            repository=image.repository,
            image_tag=image.tag,
            shared_revision=shared_revision(self),
            jobs=imported.jobs,
            bucket=imported.bucket,
            output_prefix=config.output_prefix,
            table=imported.table,
            events_topic=imported.events_topic,
            download_allowed_hosts=config.download_allowed_hosts,
            subnets=imported.task_subnets,
            assign_public_ip=shared.assign_public_ip,
            log_retention=config.log_retention,
        )
        service = self.service.runtime.service
        self.alarms = FleetAlarms(
            self,
            "FleetAlarms",
            cluster_name=imported.cluster.cluster_name,
            cluster_arn=imported.cluster.cluster_arn,
            service_name=service.service_name,
            service_arn=service.service_arn,
            max_tasks=config.deployment.worker.max_tasks,
            alarm_topic=imported.alarm_topic,
        )
