"""The ECS cluster both services run in."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

__all__ = ["ServiceCluster"]


class ServiceCluster(Construct):
    """An ECS cluster with the FARGATE and FARGATE_SPOT capacity providers.

    Container Insights is on because the worker's autoscaling divides the queue backlog
    by the service's ``RunningTaskCount``, which only Container Insights publishes.

    Attributes:
        cluster: the cluster.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc) -> None:
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            enable_fargate_capacity_providers=True,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
