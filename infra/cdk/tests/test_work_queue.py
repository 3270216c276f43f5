"""SQS 1 and SQS 2 with their DLQs, against ``QueueTiming``."""

from __future__ import annotations

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

SHARED = "ExportPipeShared"
TIMING = {"Requests": DEFAULT_DEPLOYMENT.requests_queue, "Jobs": DEFAULT_DEPLOYMENT.jobs_queue}
DAY = 24 * 3600


def _queue(synth, prefix):
    (name,) = [n for n in synth.resources(SHARED, "AWS::SQS::Queue") if n.startswith(prefix)]
    return name, synth.templates[SHARED]["Resources"][name]


@pytest.mark.parametrize("name", ["Requests", "Jobs"])
def test_queue_timing_comes_from_sizing(synth, name):
    _, queue = _queue(synth, f"{name}Queue")
    props, timing = queue["Properties"], TIMING[name]
    assert props["VisibilityTimeout"] == timing.visibility_timeout_seconds
    assert props["ReceiveMessageWaitTimeSeconds"] == timing.wait_time_seconds
    assert props["MessageRetentionPeriod"] == timing.retention_days * DAY
    # Two missed heartbeats still leave a running job covered.
    assert timing.heartbeat_seconds * 2 < timing.visibility_timeout_seconds


@pytest.mark.parametrize("name", ["Requests", "Jobs"])
def test_redrive_to_its_own_dlq(synth, name):
    _, queue = _queue(synth, f"{name}Queue")
    dlq_name, dlq = _queue(synth, f"{name}Dlq")
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_name, "Arn"]},
        "maxReceiveCount": TIMING[name].max_receive_count,
    }
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * DAY
    assert dlq["DeletionPolicy"] == "Retain"
    assert "RedrivePolicy" not in dlq["Properties"]


@pytest.mark.parametrize("prefix", ["RequestsQueue", "RequestsDlq", "JobsQueue", "JobsDlq"])
def test_encrypted_and_tls_only(synth, prefix):
    name, queue = _queue(synth, prefix)
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = [
        p["Properties"]
        for p in synth.resources(SHARED, "AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": name}]
    ]
    (policy,) = policies
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Action"] == "sqs:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_queue_shapes_with_cdk_assertions(synth):
    from aws_cdk.assertions import Match

    template = synth.template(SHARED)
    template.resource_count_is("AWS::SQS::Queue", 4)
    for timing in TIMING.values():
        template.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "VisibilityTimeout": timing.visibility_timeout_seconds,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": Match.object_like({"Fn::GetAtt": Match.any_value()}),
                    "maxReceiveCount": timing.max_receive_count,
                },
            },
        )
    template.has_resource(
        "AWS::SQS::Queue",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like({"MessageRetentionPeriod": 14 * DAY}),
        },
    )
