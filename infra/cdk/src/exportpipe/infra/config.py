"""Deployment configuration of the CDK app: what differs between AWS accounts.

Sizing, queue timing and scaling come from :mod:`exportpipe.common.sizing` (the one
source of truth the capacity planner also reads); this module only adds what a
deployment must choose for itself. ``app.py`` builds an :class:`InfraConfig` from its
environment with :meth:`InfraConfig.from_environ`; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aws_cdk import aws_logs as logs

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment

__all__ = ["ConfigError", "InfraConfig"]

_DEFAULT_EXPORT_API_URL = "https://export-api.example.com/v1"


class ConfigError(ValueError):
    """A deployment variable is malformed; the message names it."""


@dataclass(frozen=True, kw_only=True)
class InfraConfig:
    """What one deployment of the three stacks needs besides the sizing module.

    Attributes:
        deployment: task sizes, queue timing and scaling (``DEFAULT_DEPLOYMENT``).
        export_api_url: base URL of the vendor Export API (orchestrator setting).
        download_allowed_hosts: value of ``EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS`` for the
            worker, passed through verbatim (its format is the worker's setting).
        output_prefix: key prefix under which workers write; their IAM is scoped to it.
        alarm_email: address subscribed to the alarm topic, if any.
        vpc_id: an existing VPC to use instead of creating one (needs account/region).
        nat_gateways: 0 puts tasks in public subnets with public IPs and no inbound
            rules (no NAT data-processing charge on bulk downloads); more puts them in
            private subnets behind that many NAT gateways (a fixed egress address the
            vendor can allow-list).
        account / region: the target environment; ``None`` synthesizes
            environment-agnostic templates.
        log_retention: CloudWatch Logs retention of service and flow logs.
    """

    deployment: Deployment = field(default_factory=lambda: DEFAULT_DEPLOYMENT)
    export_api_url: str = _DEFAULT_EXPORT_API_URL
    download_allowed_hosts: str = ""
    output_prefix: str = "exports/"
    alarm_email: str | None = None
    vpc_id: str | None = None
    nat_gateways: int = 0
    account: str | None = None
    region: str | None = None
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH

    def __post_init__(self) -> None:
        if not self.export_api_url.startswith("https://"):
            raise ConfigError("EXPORTPIPE_EXPORT_API_URL: must be an https:// URL")
        if self.output_prefix.startswith("/") or not self.output_prefix.endswith("/"):
            raise ConfigError("EXPORTPIPE_OUTPUT_PREFIX: must be relative and end with '/'")
        if self.nat_gateways < 0:
            raise ConfigError("EXPORTPIPE_NAT_GATEWAYS: must be 0 or more")
        if self.vpc_id and not (self.account and self.region):
            raise ConfigError(
                "EXPORTPIPE_VPC_ID: importing a VPC needs CDK_DEFAULT_ACCOUNT and "
                "CDK_DEFAULT_REGION (run through the cdk CLI with credentials)"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> InfraConfig:
        """Build the configuration from ``app.py``'s environment.

        Reads ``EXPORTPIPE_EXPORT_API_URL``, ``EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS``,
        ``EXPORTPIPE_OUTPUT_PREFIX``, ``EXPORTPIPE_ALARM_EMAIL``, ``EXPORTPIPE_VPC_ID``,
        ``EXPORTPIPE_NAT_GATEWAYS`` and the CDK CLI's ``CDK_DEFAULT_ACCOUNT`` /
        ``CDK_DEFAULT_REGION``; unset variables keep the defaults.

        Raises:
            ConfigError: naming the malformed variable.
        """
        nat = environ.get("EXPORTPIPE_NAT_GATEWAYS", "0")
        if not nat.isdigit():
            raise ConfigError(f"EXPORTPIPE_NAT_GATEWAYS: not a whole number: {nat!r}")
        return cls(
            export_api_url=environ.get("EXPORTPIPE_EXPORT_API_URL", _DEFAULT_EXPORT_API_URL),
            download_allowed_hosts=environ.get("EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS", ""),
            output_prefix=environ.get("EXPORTPIPE_OUTPUT_PREFIX", "exports/"),
            alarm_email=environ.get("EXPORTPIPE_ALARM_EMAIL") or None,
            vpc_id=environ.get("EXPORTPIPE_VPC_ID") or None,
            nat_gateways=int(nat),
            account=environ.get("CDK_DEFAULT_ACCOUNT") or None,
            region=environ.get("CDK_DEFAULT_REGION") or None,
        )
