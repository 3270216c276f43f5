"""Deployment configuration of the CDK app: what differs between AWS accounts.

Sizing, queue timing and scaling come from :mod:`exportpipe.common.sizing` (the one
source of truth the capacity planner also reads); this module only adds what a
deployment must choose for itself. ``app.py`` builds an :class:`InfraConfig` from its
environment with :meth:`InfraConfig.from_environ`; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import aws_logs as logs

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment

__all__ = ["ENVIRONMENTS_CONTEXT_KEY", "ConfigError", "InfraConfig"]

_DEFAULT_EXPORT_API_URL = "https://export-api.example.com/v1"

ENVIRONMENTS_CONTEXT_KEY = "exportpipe:environments"
"""``cdk.json`` context key holding each environment's committed network settings:
``{"<name>": {"natGateways": int, "vpcId": str | null, "outputPrefix": str}}``."""

_CONTEXT_SETTINGS = {
    "natGateways": "nat_gateways",
    "vpcId": "vpc_id",
    "outputPrefix": "output_prefix",
}
_MOVED_TO_CONTEXT = ("EXPORTPIPE_NAT_GATEWAYS", "EXPORTPIPE_VPC_ID", "EXPORTPIPE_OUTPUT_PREFIX")


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
            raise ConfigError("outputPrefix: must be relative and end with '/'")
        if self.nat_gateways < 0:
            raise ConfigError("natGateways: must be 0 or more")
        if self.vpc_id and not (self.account and self.region):
            raise ConfigError(
                "vpcId: importing a VPC needs CDK_DEFAULT_ACCOUNT and "
                "CDK_DEFAULT_REGION (run through the cdk CLI with credentials)"
            )

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], context: Mapping[str, Any] | None = None
    ) -> InfraConfig:
        """Build the configuration from ``app.py``'s environment and ``cdk.json`` context.

        The network and key layout (NAT gateways, VPC, output prefix) are committed per
        environment in the context under :data:`ENVIRONMENTS_CONTEXT_KEY`, chosen by
        ``EXPORTPIPE_ENVIRONMENT`` (default ``production``), so a deployment cannot
        differ from review by an ad-hoc variable. The environment still supplies
        ``EXPORTPIPE_EXPORT_API_URL``, ``EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS``,
        ``EXPORTPIPE_ALARM_EMAIL`` and the CDK CLI's ``CDK_DEFAULT_ACCOUNT`` /
        ``CDK_DEFAULT_REGION``. Without a context (tests) the defaults apply.

        Raises:
            ConfigError: naming the malformed variable or context entry.
        """
        for variable in _MOVED_TO_CONTEXT:
            if variable in environ:
                raise ConfigError(
                    f"{variable}: no longer read from the environment; set it per "
                    f"environment in cdk.json context {ENVIRONMENTS_CONTEXT_KEY!r}"
                )
        name = environ.get("EXPORTPIPE_ENVIRONMENT", "production")
        chosen: dict[str, Any] = {}
        if context is not None:
            environments = context.get(ENVIRONMENTS_CONTEXT_KEY, {})
            if name not in environments:
                raise ConfigError(
                    f"EXPORTPIPE_ENVIRONMENT: {name!r} is not one of "
                    f"{sorted(environments)} in cdk.json context {ENVIRONMENTS_CONTEXT_KEY!r}"
                )
            where = f"cdk.json context {ENVIRONMENTS_CONTEXT_KEY}.{name}"
            for key, value in environments[name].items():
                if key not in _CONTEXT_SETTINGS:
                    raise ConfigError(f"{where}: unknown setting {key!r}")
                chosen[_CONTEXT_SETTINGS[key]] = value
            nat = chosen.get("nat_gateways", 0)
            if not isinstance(nat, int) or isinstance(nat, bool):
                raise ConfigError(f"{where}.natGateways: not a whole number: {nat!r}")
            chosen = {k: v for k, v in chosen.items() if v is not None}
        return cls(
            export_api_url=environ.get("EXPORTPIPE_EXPORT_API_URL", _DEFAULT_EXPORT_API_URL),
            download_allowed_hosts=environ.get("EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS", ""),
            alarm_email=environ.get("EXPORTPIPE_ALARM_EMAIL") or None,
            account=environ.get("CDK_DEFAULT_ACCOUNT") or None,
            region=environ.get("CDK_DEFAULT_REGION") or None,
            **chosen,
        )
