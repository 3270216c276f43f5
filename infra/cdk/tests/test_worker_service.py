"""The worker's IAM: SQS 2, the output prefix, the table, the topic, task protection."""

from __future__ import annotations

import re

WORKER = "ExportPipeWorker"


def _ref(text, prefix, attr="Arn"):
    """Whether ``text`` is the shared stack's ``prefix``* resource's ``attr``."""
    suffix = rf"\.{attr}" if attr else ""
    return re.fullmatch(rf"<{prefix}[0-9A-F]{{8}}{suffix}>", text) is not None


def _list(value):
    return value if isinstance(value, list) else [value]


def _scoped(synth):
    return {
        sid: (sorted(_list(s["Action"])), synth.text(s["Resource"]), s.get("Condition"))
        for sid, s in synth.task_statements(WORKER).items()
    }


def test_statements_are_exactly_these(synth):
    scoped = _scoped(synth)
    assert sorted(scoped) == [
        "ConsumeJobs",
        "DeadLetterJobs",
        "ListOpenUploads",
        "ListOutputPrefix",
        "OutputObjects",
        "PublishEvents",
        "ScaleInProtection",
        "TrackExports",
    ]


def test_consumes_sqs2_and_dead_letters_to_its_dlq_only(synth):
    scoped = _scoped(synth)
    actions, resource, _ = scoped["ConsumeJobs"]
    assert actions == ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]
    assert _ref(resource, "JobsQueue")
    actions, resource, _ = scoped["DeadLetterJobs"]
    assert actions == ["sqs:SendMessage"]
    assert _ref(resource, "JobsDlq")
    assert not any("Requests" in r for _, r, _ in scoped.values())


def test_s3_access_is_confined_to_the_output_prefix(synth):
    scoped = _scoped(synth)
    actions, resource, condition = scoped["OutputObjects"]
    assert actions == [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:ListMultipartUploadParts",
        "s3:PutObject",
        "s3:PutObjectTagging",
    ]
    assert resource.startswith("arn:<AWS::Partition>:s3:::<OutputBucket")
    assert resource.endswith(">/exports/*")
    assert condition is None
    actions, resource, condition = scoped["ListOutputPrefix"]
    assert actions == ["s3:ListBucket"]
    assert resource.startswith("arn:<AWS::Partition>:s3:::<OutputBucket")
    assert resource.endswith(">")
    assert condition == {"StringLike": {"s3:prefix": ["exports/*"]}}
    actions, resource, _ = scoped["ListOpenUploads"]
    assert actions == ["s3:ListBucketMultipartUploads"]
    assert resource == scoped["ListOutputPrefix"][1]


def test_table_and_topic(synth):
    scoped = _scoped(synth)
    actions, resource, _ = scoped["TrackExports"]
    assert "dynamodb:Scan" not in actions
    assert not any(a.startswith("dynamodb:") and "Table" in a for a in actions)
    # The table is imported by its name output; its ARN is formatted from the name.
    prefix = "arn:<AWS::Partition>:dynamodb:<AWS::Region>:<AWS::AccountId>:table/"
    assert re.fullmatch(re.escape(prefix) + r"<TrackingTable[0-9A-F]{8}>", resource)
    actions, resource, _ = scoped["PublishEvents"]
    assert actions == ["sns:Publish"]
    assert resource.startswith("<EventsTopic")


def test_task_protection_is_limited_to_its_own_cluster(synth):
    actions, resource, condition = _scoped(synth)["ScaleInProtection"]
    assert actions == ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"]
    assert resource.startswith(
        "arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/<Cluster"
    )
    assert resource.endswith(">/*")
    cluster = synth.text(condition["ArnEquals"]["ecs:cluster"])
    assert cluster.startswith("arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:cluster/")
    assert cluster.removeprefix(
        "arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:cluster/"
    ) == resource.removeprefix(
        "arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/"
    ).removesuffix("/*")


def test_scaling_dashboard_shows_the_load_ratio_and_activation(synth):
    dashboards = synth.resources("ExportPipeWorker", "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    (body,) = [synth.text(d["Properties"]["DashboardBody"]) for d in dashboards.values()]
    assert "(visible + inFlight) / IF(tasks < 1, 1, tasks) / 4" in body
    assert "IF(FILL(running, 0) < 1 AND visible > 0, 1, 0)" in body
    assert "scale out +25%" in body
