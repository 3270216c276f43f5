"""Deployment configuration read by ``app.py``."""

from __future__ import annotations

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.infra.config import ENVIRONMENTS_CONTEXT_KEY, ConfigError, InfraConfig


def test_defaults_synthesize_environment_agnostic_templates():
    config = InfraConfig.from_environ({})
    assert config.deployment is DEFAULT_DEPLOYMENT
    assert (config.account, config.region, config.vpc_id) == (None, None, None)
    assert config.nat_gateways == 0
    assert config.output_prefix == "exports/"


def _context(**production):
    return {ENVIRONMENTS_CONTEXT_KEY: {"production": production, "staging": {}}}


def test_reads_its_variables_and_the_environment_context():
    config = InfraConfig.from_environ(
        {
            "EXPORTPIPE_EXPORT_API_URL": "https://vendor.example.com/api",
            "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": "dl.example.com",
            "EXPORTPIPE_ALARM_EMAIL": "ops@example.com",
            "CDK_DEFAULT_ACCOUNT": "123456789012",
            "CDK_DEFAULT_REGION": "eu-west-1",
            "UNRELATED": "x",
        },
        _context(natGateways=1, vpcId="vpc-0123", outputPrefix="out/"),
    )
    assert config.export_api_url == "https://vendor.example.com/api"
    assert config.download_allowed_hosts == "dl.example.com"
    assert config.output_prefix == "out/"
    assert config.alarm_email == "ops@example.com"
    assert config.nat_gateways == 1
    assert (config.account, config.region, config.vpc_id) == (
        "123456789012",
        "eu-west-1",
        "vpc-0123",
    )


def test_environment_picks_its_committed_settings():
    context = _context(natGateways=2)
    context[ENVIRONMENTS_CONTEXT_KEY]["staging"] = {"natGateways": 0, "outputPrefix": "s/"}
    staging = InfraConfig.from_environ({"EXPORTPIPE_ENVIRONMENT": "staging"}, context)
    assert (staging.nat_gateways, staging.output_prefix) == (0, "s/")
    assert InfraConfig.from_environ({}, context).nat_gateways == 2


def test_committed_cdk_json_has_every_environment_the_workflows_deploy():
    import json
    from pathlib import Path

    cdk_json = Path(__file__).resolve().parents[1] / "cdk.json"
    context = json.loads(cdk_json.read_text())["context"]
    for name in ("production", "staging"):
        config = InfraConfig.from_environ({"EXPORTPIPE_ENVIRONMENT": name}, context)
        assert config.output_prefix.endswith("/")


@pytest.mark.parametrize(
    ("environ", "context", "variable"),
    [
        (
            {"EXPORTPIPE_EXPORT_API_URL": "http://plain.example.com"},
            None,
            "EXPORTPIPE_EXPORT_API_URL",
        ),
        # Issue 17: network settings are committed per environment, never ad hoc.
        ({"EXPORTPIPE_NAT_GATEWAYS": "1"}, None, "EXPORTPIPE_NAT_GATEWAYS"),
        ({"EXPORTPIPE_VPC_ID": "vpc-1"}, None, "EXPORTPIPE_VPC_ID"),
        ({"EXPORTPIPE_OUTPUT_PREFIX": "out/"}, None, "EXPORTPIPE_OUTPUT_PREFIX"),
        ({"EXPORTPIPE_ENVIRONMENT": "qa"}, _context(), "EXPORTPIPE_ENVIRONMENT"),
        ({}, _context(natGateways="two"), "natGateways"),
        ({}, _context(outputPrefix="/abs/"), "outputPrefix"),
        ({}, _context(outputPrefix="noslash"), "outputPrefix"),
        ({}, _context(vpcId="vpc-1"), "vpcId"),
        ({}, _context(nat=1), "nat"),
    ],
)
def test_malformed_values_name_the_variable(environ, context, variable):
    with pytest.raises(ConfigError, match=variable):
        InfraConfig.from_environ(environ, context)
