"""What both services have in common: a Fargate service consuming an SQS queue."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from exportpipe.common.sizing import ServiceSizing
from exportpipe.infra.nag import acknowledge

__all__ = [
    "HEALTH_CHECK_COMMAND",
    "HEALTH_CHECK_TIMING",
    "PLATFORM_VERSION",
    "SCRATCH_PATH",
    "QueueService",
    "capacity_strategy",
]

SCRATCH_PATH = "/tmp"  # noqa: S108 - task-private ephemeral volume, not a shared /tmp
"""Where the task's ephemeral storage is mounted; the root filesystem is read-only.

The images declare it as a ``VOLUME`` owned by UID 10001: Fargate creates an undeclared
bind mount root-owned, mode 0755, which the non-root user cannot write
(containers-roadmap #938)."""

HEALTH_CHECK_COMMAND = (
    "python",
    "-c",
    "import os, sys, time; p = os.environ['EXPORTPIPE_HEARTBEAT_FILE']; "
    "sys.exit(0 if os.path.exists(p) and time.time() - os.path.getmtime(p) < 180 else 1)",
)
"""Healthy while the consumer's receive or heartbeat loop touched its heartbeat file in
the last 180 s. The images' ``HEALTHCHECK`` runs the same command (a test keeps them
equal), but ECS only runs the task definition's."""

HEALTH_CHECK_TIMING = {"interval": 30, "timeout": 5, "start_period": 60, "retries": 3}
"""Seconds (and retries) of the container health check, as the images declare them."""

PLATFORM_VERSION = ecs.FargatePlatformVersion.VERSION1_4
"""Pinned rather than LATEST: FARGATE_SPOT supports ARM64 from platform version 1.4.0."""


def capacity_strategy(sizing: ServiceSizing) -> list[ecs.CapacityProviderStrategy]:
    """The capacity provider strategy ``sizing`` asks for.

    Spot services place ``on_demand_base`` tasks on FARGATE first and every task beyond
    that on FARGATE_SPOT (FARGATE has weight 0); other services run on FARGATE only.
    """
    if not sizing.spot:
        return [ecs.CapacityProviderStrategy(capacity_provider="FARGATE", weight=1)]
    return [
        ecs.CapacityProviderStrategy(
            capacity_provider="FARGATE", base=sizing.on_demand_base, weight=0
        ),
        ecs.CapacityProviderStrategy(capacity_provider="FARGATE_SPOT", weight=1),
    ]


class QueueService(Construct):
    """A Fargate service running one container of a service image, sized by ``sizing``.

    The container runs ``command`` from ``repository:image_tag`` as the image's
    non-root user on a read-only root filesystem, with the task's ephemeral storage
    mounted at :data:`SCRATCH_PATH`, logs to its own log group (``awslogs``,
    non-blocking so a slow log stream never stalls a job) and ``stopTimeout`` from
    ``sizing``. The security group allows no inbound traffic. The service's task count
    is left to autoscaling (``scaling``) between ``sizing.min_tasks`` and
    ``sizing.max_tasks``.

    Attributes:
        task_definition: the Fargate task definition (add task-role statements here).
        container: the service's container.
        service: the ECS service.
        scaling: its scalable task count.
        log_group: where the container logs (and EMF metrics) go.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        sizing: ServiceSizing,
        repository: ecr.IRepository,
        image_tag: str,
        shared_revision: str,
        command: str,
        environment: Mapping[str, str],
        secrets: Mapping[str, ecs.Secret] | None = None,
        subnets: ec2.SubnetSelection,
        assign_public_ip: bool,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=sizing.cpu_units,
            memory_limit_mib=sizing.memory_mib,
            # 20 GiB is Fargate's included default; the property only accepts 21-200.
            ephemeral_storage_gib=(
                sizing.ephemeral_storage_gib if sizing.ephemeral_storage_gib > 20 else None
            ),
            # Graviton: cheaper per vCPU-hour, on demand and on Spot (platform 1.4.0+).
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            volumes=[ecs.Volume(name="scratch")],
        )
        self.container = self.task_definition.add_container(
            "app",
            image=ecs.ContainerImage.from_ecr_repository(repository, tag=image_tag),
            command=[command],
            environment=dict(environment),
            secrets=dict(secrets or {}),
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=command,
                log_group=self.log_group,
                mode=ecs.AwsLogDriverMode.NON_BLOCKING,
                max_buffer_size=Size.mebibytes(25),
            ),
            stop_timeout=Duration.seconds(sizing.stop_timeout_seconds),
            # A new shared revision is a new task definition: every shared value it
            # reads is resolved again (exportpipe.infra.shared_outputs).
            docker_labels={"exportpipe.shared-revision": shared_revision},
            readonly_root_filesystem=True,
            essential=True,
            # PID 1 is an init that forwards SIGTERM and reaps children: a Python process
            # as PID 1 ignores SIGTERM until it installed its handler.
            linux_parameters=ecs.LinuxParameters(self, "Linux", init_process_enabled=True),
            health_check=ecs.HealthCheck(
                command=["CMD", *HEALTH_CHECK_COMMAND],
                interval=Duration.seconds(HEALTH_CHECK_TIMING["interval"]),
                timeout=Duration.seconds(HEALTH_CHECK_TIMING["timeout"]),
                start_period=Duration.seconds(HEALTH_CHECK_TIMING["start_period"]),
                retries=HEALTH_CHECK_TIMING["retries"],
            ),
        )
        self.container.add_mount_points(
            ecs.MountPoint(source_volume="scratch", container_path=SCRATCH_PATH, read_only=False)
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            (
                "Only non-secret configuration (queue URLs, bucket, table, concurrency) is "
                "passed as environment values; the Export API token comes from Secrets "
                "Manager through the task definition's secrets."
            ),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-IAM5[Resource::*]",
            "The execution role's ecr:GetAuthorizationToken has no resource-level "
            "permissions; image pulls themselves are scoped to the service's repository.",
        )
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=cluster.vpc,
            description=f"{command}: no inbound, HTTPS out to AWS APIs and the vendor",
            allow_all_outbound=False,
        )
        # Everything the services call (AWS APIs, S3/DynamoDB through gateway endpoints,
        # the vendor) is HTTPS. DNS, the task metadata endpoint and the ECS agent URI are
        # not filtered by security groups.
        security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs and the vendor"
        )
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=self.task_definition,
            capacity_provider_strategies=capacity_strategy(sizing),
            platform_version=PLATFORM_VERSION,
            vpc_subnets=subnets,
            assign_public_ip=assign_public_ip,
            security_groups=[security_group],
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            # Rebalancing stops running tasks; for workers that means abandoning jobs.
            availability_zone_rebalancing=ecs.AvailabilityZoneRebalancing.DISABLED,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
            enable_ecs_managed_tags=True,
        )
        self.scaling = self.service.auto_scale_task_count(
            min_capacity=sizing.min_tasks, max_capacity=sizing.max_tasks
        )
