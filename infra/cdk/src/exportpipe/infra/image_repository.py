"""An ECR repository a service's CI pushes its images to."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ecr as ecr
from constructs import Construct

__all__ = ["REPOSITORY_NAMES", "ImageRepository"]

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
