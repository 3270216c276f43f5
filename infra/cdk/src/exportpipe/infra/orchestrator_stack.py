"""The orchestrator's stack: its service, released by the orchestrator team."""

from __future__ import annotations

from aws_cdk import CfnParameter, Stack
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from exportpipe.infra.config import InfraConfig
from exportpipe.infra.image_repository import REPOSITORY_NAMES
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
        image_tag = CfnParameter(
            self,
            "ImageTag",
            type="String",
            description="Tag of the exportpipe/orchestrator image to run (CI: the commit SHA)",
            allowed_pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
        )
        self.service = OrchestratorService(
            self,
            "Orchestrator",
            cluster=shared.cluster,
            deployment=config.deployment,
            repository=ecr.Repository.from_repository_name(
                self, "Images", REPOSITORY_NAMES["orchestrator"]
            ),
            image_tag=image_tag.value_as_string,
            requests=shared.requests,
            jobs=shared.jobs,
            bucket=shared.bucket,
            output_prefix=config.output_prefix,
            api_token=shared.api_token,
            export_api_url=config.export_api_url,
            subnets=shared.task_subnets,
            assign_public_ip=shared.assign_public_ip,
            log_retention=config.log_retention,
        )
