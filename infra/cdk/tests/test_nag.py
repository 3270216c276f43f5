"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgment has a reason."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from exportpipe.infra.nag import acknowledge, wildcard_resource_finding


def _violations(report):
    return sorted(
        (v.rule_name, r.construct_path or r.resource_logical_id or "?")
        for v in report.violations
        for r in v.violating_resources
    )


def test_the_app_has_no_unacknowledged_finding(synth):
    report = AwsSolutionsChecks().validate_scope(synth.app)
    assert _violations(report) == []
    assert report.success


def test_the_checks_do_catch_a_finding():
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    sqs.Queue(stack, "PlainQueue")
    acknowledged = sqs.Queue(stack, "AcknowledgedQueue", enforce_ssl=True)
    acknowledge(acknowledged, "AwsSolutions-SQS3", "probe queue; no DLQ needed in this test")
    rules = {rule for rule, _ in _violations(AwsSolutionsChecks().validate_scope(app))}
    assert "AwsSolutions-SQS4" in rules
    assert "AwsSolutions-SQS3" in rules  # the plain queue's; the acknowledged one is quiet


def test_every_acknowledgment_gives_a_reason(synth):
    acknowledged = {}
    for construct in synth.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in entry.data.items():
                    # CDK acknowledges some CloudFormation-Validate rules of its own.
                    if "AwsSolutions-" in rule:
                        acknowledged[(construct.node.path, rule)] = reason
    assert len(acknowledged) >= 8
    for (path, rule), reason in acknowledged.items():
        assert len(reason.split()) >= 8, (path, rule, reason)


def test_acknowledge_refuses_an_empty_reason():
    app = cdk.App()
    bucket = s3.Bucket(cdk.Stack(app, "Probe"), "Bucket")
    with pytest.raises(ValueError, match="needs a reason"):
        acknowledge(bucket, "AwsSolutions-S1", "  ")


def test_wildcard_resource_finding_matches_cdk_nag_naming():
    app = cdk.App()
    stack = cdk.Stack(app, "Probe")
    bucket = s3.Bucket(stack, "Bucket")
    finding = wildcard_resource_finding(stack, bucket.arn_for_objects("exports/*"))
    logical_id = stack.get_logical_id(bucket.node.default_child)
    assert finding == f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/exports/*]"
    shared = cdk.Fn.get_stack_output("Shared", "Name")
    assert wildcard_resource_finding(stack, f"arn:aws:s3:::{shared}/x/*") == (
        'AwsSolutions-IAM5[Resource::arn:aws:s3:::{"Fn::GetStackOutput":'
        '{"StackName":"Shared","OutputName":"Name"}}/x/*]'
    )
