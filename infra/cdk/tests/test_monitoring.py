"""Alarms, the alarm topic and the dashboard."""

from __future__ import annotations

import json

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.infra.monitoring import BYTE_METRICS, JOB_METRICS

SHARED = "ExportPipeShared"


def _alarm(synth, name):
    (alarm,) = [
        a["Properties"]
        for n, a in synth.resources(SHARED, "AWS::CloudWatch::Alarm").items()
        if n.startswith(f"Monitoring{name}")
    ]
    return alarm


def _alarm_topic(synth):
    (name,) = [
        n
        for n in synth.resources(SHARED, "AWS::SNS::Topic")
        if n.startswith("MonitoringAlarmTopic")
    ]
    return name


@pytest.mark.parametrize("queue", ["Requests", "Jobs"])
def test_dlq_depth_alarm(synth, queue):
    alarm = _alarm(synth, f"{queue}DlqNotEmpty")
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    (dimension,) = alarm["Dimensions"]
    assert synth.text(dimension["Value"]).startswith(f"<{queue}Dlq")
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"


@pytest.mark.parametrize(
    ("queue", "timing"),
    [("Requests", DEFAULT_DEPLOYMENT.requests_queue), ("Jobs", DEFAULT_DEPLOYMENT.jobs_queue)],
)
def test_oldest_message_age_alarm(synth, queue, timing):
    alarm = _alarm(synth, f"{queue}OldestMessageAge")
    assert alarm["MetricName"] == "ApproximateAgeOfOldestMessage"
    (dimension,) = alarm["Dimensions"]
    assert synth.text(dimension["Value"]).startswith(f"<{queue}Queue")
    assert alarm["Threshold"] == timing.oldest_message_alarm_seconds
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_exports_stalled_alarm_covers_every_dimension_set(synth):
    alarm = _alarm(synth, "ExportsStalled")
    (query,) = alarm["Metrics"]
    assert query["Expression"] == 'SELECT MAX(ExportsStalled) FROM "ExportPipe"'
    assert query["ReturnData"] is True
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_every_alarm_notifies_the_alarm_topic(synth):
    topic = _alarm_topic(synth)
    alarms = [
        a["Properties"]
        for n, a in synth.resources(SHARED, "AWS::CloudWatch::Alarm").items()
        if n.startswith("Monitoring")
    ]
    assert len(alarms) == 7  # 2 x (DLQ, oldest, quiet-group oldest) + stalled
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic}]
        assert alarm["OKActions"] == [{"Ref": topic}]


def test_dashboard_shows_queues_tasks_and_throughput(synth):
    (dashboard,) = synth.resources(SHARED, "AWS::CloudWatch::Dashboard").values()
    body = synth.text(dashboard["Properties"]["DashboardBody"])
    widgets = json.loads(body.replace("<AWS::Region>", "us-east-1"))["widgets"]
    titles = {w["properties"]["title"] for w in widgets}
    assert titles >= {
        "Queue depth",
        "Oldest message age (s)",
        "DLQ depth",
        "Running tasks",
        "Jobs per minute",
        "Bytes per minute",
        "Alarms",
    }
    for name in [*JOB_METRICS, *BYTE_METRICS, "RunningTaskCount"]:
        assert f'MetricName=\\"{name}\\"' in body or f'MetricName="{name}"' in body
    for metric in (
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateAgeOfOldestMessage",
    ):
        assert metric in body
