"""An ECR repository a service's CI pushes its images to."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnParameter, RemovalPolicy
from aws_cdk import aws_ecr as ecr
from constructs import Construct

__all__ = ["REPOSITORY_NAMES", "ImageRepository", "ReleasedImage", "released_image"]

REPOSITORY_NAMES = {
    "orchestrator": "exportpipe/orchestrator",
    "worker": "exportpipe/worker",
}
"""ECR repository per service; CI pushes there and the service stacks import them by name."""


class ImageRepository(Construct):
    """Private ECR repository: immutable tags, scan on push, old images expire.

    Tags are immutable because a service stack's ``ImageTag`` parameter must always
    mean the same image (CI tags with the commit SHA).

    Attributes:
        repository: the repository.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, repository_name: str, keep_images: int = 50
    ) -> None:
        super().__init__(scope, construct_id)
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=repository_name,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            image_scan_on_push=True,
            encryption=ecr.RepositoryEncryption.AES_256,
            lifecycle_rules=[ecr.LifecycleRule(max_image_count=keep_images)],
            removal_policy=RemovalPolicy.RETAIN,
        )


@dataclass(frozen=True)
class ReleasedImage:
    """What a service stack runs: its repository and the ``ImageTag`` it was deployed with."""

    repository: ecr.IRepository
    tag: str


def released_image(scope: Construct, service: str) -> ReleasedImage:
    """Import ``service``'s repository and declare the stack's ``ImageTag`` parameter.

    Each service stack takes its image tag as a parameter, so one team deploys its own
    service (``cdk deploy --exclusively``) without touching the other's.
    """
    image_tag = CfnParameter(
        scope,
        "ImageTag",
        type="String",
        description=f"Tag of the exportpipe/{service} image to run (CI: the commit SHA)",
        allowed_pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
    )
    repository = ecr.Repository.from_repository_name(scope, "Images", REPOSITORY_NAMES[service])
    return ReleasedImage(repository, image_tag.value_as_string)
