"""The orchestrator's IAM and scaling."""

from __future__ import annotations

import re

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

ORCHESTRATOR = "ExportPipeOrchestrator"


def test_task_role_statements_are_exactly_these(synth):
    statements = synth.task_statements(ORCHESTRATOR)
    scoped = {
        sid: (sorted(_list(s["Action"])), synth.text(s["Resource"]))
        for sid, s in statements.items()
    }
    assert scoped == {
        "ConsumeRequests": (
            ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"],
            _arn(scoped["ConsumeRequests"][1], "RequestsQueue"),
        ),
        "DeadLetterRequests": (
            ["sqs:SendMessage"],
            _arn(scoped["DeadLetterRequests"][1], "RequestsDlq"),
        ),
        "SendRequestsAndJobs": (["sqs:SendMessage"], scoped["SendRequestsAndJobs"][1]),
        "TrackExports": (
            [
                "dynamodb:ConditionCheckItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            scoped["TrackExports"][1],
        ),
        "QueryActiveExports": (["dynamodb:Query"], scoped["QueryActiveExports"][1]),
        "OutputObjects": (
            ["s3:AbortMultipartUpload", "s3:PutObject"],
            scoped["OutputObjects"][1],
        ),
        "ReadFileManifests": (["s3:GetObject"], scoped["ReadFileManifests"][1]),
        "PublishEvents": (["sns:Publish"], scoped["PublishEvents"][1]),
    }
    send = sorted(scoped["SendRequestsAndJobs"][1].split(","))
    assert len(send) == 2
    assert _ref(send[0], "JobsQueue")
    assert _ref(send[1], "RequestsQueue")
    # The table is imported by its name output; its ARN is formatted from the name.
    assert _table(scoped["TrackExports"][1])
    assert _table(scoped["QueryActiveExports"][1], "/index/active")
    assert scoped["OutputObjects"][1].startswith("arn:<AWS::Partition>:s3:::<OutputBucket")
    assert scoped["OutputObjects"][1].endswith(">/exports/*/_manifest.json")
    assert scoped["ReadFileManifests"][1].endswith(">/exports/*/manifests/*")
    assert scoped["PublishEvents"][1].startswith("<EventsTopic")


def test_orchestrator_never_consumes_jobs_or_lists_the_bucket(synth):
    for statement in synth.task_statements(ORCHESTRATOR).values():
        actions = _list(statement["Action"])
        resources = synth.text(statement["Resource"])
        if "JobsQueue" in resources:
            assert actions == ["sqs:SendMessage"]
        assert not any(a.startswith("s3:List") or a == "s3:DeleteObject" for a in actions)


def test_scales_out_on_requests_backlog_and_back_in_when_idle(synth):
    alarms = synth.resources(ORCHESTRATOR, "AWS::CloudWatch::Alarm")
    out = next(a["Properties"] for n, a in alarms.items() if "ScaleOutOnRequests" in n)
    back = next(a["Properties"] for n, a in alarms.items() if "ScaleInWhenIdle" in n)
    for alarm in (out, back):
        assert alarm["Namespace"] == "AWS/SQS"
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        (dimension,) = alarm["Dimensions"]
        assert synth.text(dimension["Value"]).startswith("<RequestsQueue")
    assert out["Threshold"] == DEFAULT_DEPLOYMENT.orchestrator_scale_out_backlog
    assert out["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert out["EvaluationPeriods"] == 1
    assert back["Threshold"] == 0.5
    assert back["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert back["EvaluationPeriods"] == DEFAULT_DEPLOYMENT.orchestrator_scale_in_evaluation_periods
    policies = synth.resources(ORCHESTRATOR, "AWS::ApplicationAutoScaling::ScalingPolicy")
    adjustments = sorted(
        step["ScalingAdjustment"]
        for p in policies.values()
        for step in p["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    )
    assert adjustments == [-1, 1]


def _list(value):
    return value if isinstance(value, list) else [value]


def _arn(text, prefix):
    assert _ref(text, prefix), text
    return text


def _ref(text, prefix, attr="Arn"):
    """Whether ``text`` is the shared stack's ``prefix``* resource's ``attr``."""
    suffix = rf"\.{attr}" if attr else ""
    return re.fullmatch(rf"<{prefix}[0-9A-F]{{8}}{suffix}>", text) is not None


def _table(text, suffix=""):
    """Whether ``text`` is the shared tracking table's ARN (built from its name output)."""
    prefix = "arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/"
    return re.fullmatch(re.escape(prefix) + r"<TrackingTable[0-9A-F]{8}>" + re.escape(suffix), text)
