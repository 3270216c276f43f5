"""Deployment configuration read by ``app.py``."""

from __future__ import annotations

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.infra.config import ConfigError, InfraConfig


def test_defaults_synthesize_environment_agnostic_templates():
    config = InfraConfig.from_environ({})
    assert config.deployment is DEFAULT_DEPLOYMENT
    assert (config.account, config.region, config.vpc_id) == (None, None, None)
    assert config.nat_gateways == 0
    assert config.output_prefix == "exports/"


def test_reads_its_variables():
    config = InfraConfig.from_environ(
        {
            "EXPORTPIPE_EXPORT_API_URL": "https://vendor.example.com/api",
            "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": "dl.example.com",
            "EXPORTPIPE_OUTPUT_PREFIX": "out/",
            "EXPORTPIPE_ALARM_EMAIL": "ops@example.com",
            "EXPORTPIPE_NAT_GATEWAYS": "1",
            "CDK_DEFAULT_ACCOUNT": "123456789012",
            "CDK_DEFAULT_REGION": "eu-west-1",
            "EXPORTPIPE_VPC_ID": "vpc-0123",
            "UNRELATED": "x",
        }
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


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"EXPORTPIPE_NAT_GATEWAYS": "two"}, "EXPORTPIPE_NAT_GATEWAYS"),
        ({"EXPORTPIPE_EXPORT_API_URL": "http://plain.example.com"}, "EXPORTPIPE_EXPORT_API_URL"),
        ({"EXPORTPIPE_OUTPUT_PREFIX": "/abs/"}, "EXPORTPIPE_OUTPUT_PREFIX"),
        ({"EXPORTPIPE_OUTPUT_PREFIX": "noslash"}, "EXPORTPIPE_OUTPUT_PREFIX"),
        ({"EXPORTPIPE_VPC_ID": "vpc-1"}, "EXPORTPIPE_VPC_ID"),
    ],
)
def test_malformed_values_name_the_variable(environ, variable):
    with pytest.raises(ConfigError, match=variable):
        InfraConfig.from_environ(environ)
