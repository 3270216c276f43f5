"""The orchestrator's stack: its service, released by the orchestrator team."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from exportpipe.infra.config import InfraConfig
from exportpipe.infra.image_repository import released_image
from exportpipe.infra.orchestrator_service import OrchestratorService
from exportpipe.infra.shared_stack import SharedResources

__all__ = ["OrchestratorStack"]


class OrchestratorStack(Stack):
    """The orchestrator service, its IAM and scaling; image chosen by ``ImageTag``.

    Shared resources arrive as cross-stack references, so deploying this stack alone
    (``cdk deploy --exclusively``) never changes the shared stack or the worker.

    Attributes:
        service: the :class:`OrchestratorService`.
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
        image = released_image(self, "orchestrator")
        # Imported by named output: it appears in a wildcard IAM resource (see
        # SharedResources).
        bucket = s3.Bucket.from_bucket_name(self, "OutputBucket", shared.output("OutputBucketName"))
        self.service = OrchestratorService(
            self,
            "Orchestrator",
            cluster=shared.cluster,
            deployment=config.deployment,
            repository=image.repository,
            image_tag=image.tag,
            requests=shared.requests,
            jobs=shared.jobs,
            bucket=bucket,
            output_prefix=config.output_prefix,
            table=shared.table,
            events_topic=shared.events_topic,
            api_token=shared.api_token,
            export_api_url=config.export_api_url,
            subnets=shared.task_subnets,
            assign_public_ip=shared.assign_public_ip,
            log_retention=config.log_retention,
        )
