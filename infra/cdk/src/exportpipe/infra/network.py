"""The VPC the services run in: created here, or an existing one passed in."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

__all__ = ["Network"]


class Network(Construct):
    """A two-AZ VPC with S3 and DynamoDB gateway endpoints and rejected-traffic flow logs.

    Or, given ``vpc_id``, an existing VPC (tasks go to its private subnets if it has
    any); its endpoints and flow logs are then its owner's business.

    With ``nat_gateways=0`` tasks run in public subnets with public IPs (their security
    groups allow no inbound traffic): bulk downloads then pay no NAT data-processing
    charge. With NAT gateways they run in private subnets and leave through fixed
    addresses a vendor can allow-list. S3 and DynamoDB traffic stays on the gateway
    endpoints either way.

    Attributes:
        vpc: the VPC.
        task_subnets: where service tasks are placed.
        assign_public_ip: whether tasks need a public IP to reach the internet.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        nat_gateways: int,
        vpc_id: str | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
    ) -> None:
        super().__init__(scope, construct_id)
        if vpc_id is not None:
            # A lookup needs the stack's account and region (and credentials at synth).
            existing = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=vpc_id)
            self.vpc: ec2.IVpc = existing
            private = bool(existing.private_subnets)
        else:
            private = nat_gateways > 0
            subnets = [
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22
                )
            ]
            if private:
                subnets.append(
                    ec2.SubnetConfiguration(
                        name="tasks", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                    )
                )
            vpc = ec2.Vpc(
                self,
                "Vpc",
                max_azs=2,
                nat_gateways=nat_gateways,
                subnet_configuration=subnets,
                # Nothing uses the default security group; stripping its rules would take
                # a custom-resource Lambda in this stack for no traffic it actually guards.
                restrict_default_security_group=False,
                gateway_endpoints={
                    "S3": ec2.GatewayVpcEndpointOptions(
                        service=ec2.GatewayVpcEndpointAwsService.S3
                    ),
                    "DynamoDB": ec2.GatewayVpcEndpointOptions(
                        service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                    ),
                },
            )
            flow_log_group = logs.LogGroup(
                self,
                "FlowLogs",
                retention=log_retention,
                removal_policy=RemovalPolicy.DESTROY,
            )
            vpc.add_flow_log(
                "RejectedTraffic",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                traffic_type=ec2.FlowLogTrafficType.REJECT,
            )
            self.vpc = vpc
        subnet_type = ec2.SubnetType.PRIVATE_WITH_EGRESS if private else ec2.SubnetType.PUBLIC
        self.task_subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        self.assign_public_ip = not private
