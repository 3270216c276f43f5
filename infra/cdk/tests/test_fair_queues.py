"""Fair queues (ADR 0018): the noisy-tenant and quiet-tenant metrics, graphed and alarmed."""

from __future__ import annotations

import json
import re

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.infra.fair_queues import NOISY_GROUPS, QUIET_OLDEST_AGE, QUIET_VISIBLE

SHARED, WORKER = "ExportPipeShared", "ExportPipeWorker"


def _widgets(synth, stack):
    (dashboard,) = [
        d
        for name, d in synth.resources(stack, "AWS::CloudWatch::Dashboard").items()
        if stack == WORKER or name.startswith("MonitoringDashboard")
    ]
    body = synth.text(dashboard["Properties"]["DashboardBody"])
    return json.loads(body.replace("<AWS::Region>", "us-east-1"))["widgets"]


def _metric_rows(widget):
    """``[namespace, metric, 'QueueName', queue, options]`` rows of a graph widget."""
    return [row for row in widget["properties"].get("metrics", []) if len(row) >= 4]


@pytest.mark.parametrize(
    ("queue", "timing"),
    [("Requests", DEFAULT_DEPLOYMENT.requests_queue), ("Jobs", DEFAULT_DEPLOYMENT.jobs_queue)],
)
def test_alarm_when_quiet_tenants_wait_past_the_oldest_message_threshold(synth, queue, timing):
    (alarm,) = [
        a["Properties"]
        for n, a in synth.resources(SHARED, "AWS::CloudWatch::Alarm").items()
        if n.startswith(f"Monitoring{queue}QuietGroupsOldestMessageAge")
    ]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateAgeOfOldestMessageInQuietGroups"
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Period"] == 60
    (dimension,) = alarm["Dimensions"]
    assert dimension["Name"] == "QueueName"
    assert synth.text(dimension["Value"]).startswith(f"<{queue}Queue")
    assert alarm["Threshold"] == timing.oldest_message_alarm_seconds
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    (topic,) = [n for n in synth.resources(SHARED, "AWS::SNS::Topic") if "AlarmTopic" in n]
    assert alarm["AlarmActions"] == [{"Ref": topic}]


def test_worker_dashboard_shows_noisy_groups_and_quiet_group_age_of_sqs2(synth):
    widgets = _widgets(synth, WORKER)
    rows = [row for w in widgets for row in _metric_rows(w)]
    shown = {row[1]: row for row in rows if row[0] == "AWS/SQS"}
    assert {NOISY_GROUPS, QUIET_OLDEST_AGE, QUIET_VISIBLE} <= set(shown)
    for name in (NOISY_GROUPS, QUIET_OLDEST_AGE):
        assert shown[name][2] == "QueueName"
        # The worker stack names SQS 2 by its cross-stack output; nothing of SQS 1.
        assert re.search(r"JobsQueue", synth.text(shown[name][3])), shown[name][3]
    (age,) = [w for w in widgets if "quiet tenants' oldest message" in w["properties"]["title"]]
    annotations = age["properties"]["annotations"]["horizontal"]
    assert [a["value"] for a in annotations] == [
        DEFAULT_DEPLOYMENT.jobs_queue.oldest_message_alarm_seconds
    ]


def test_shared_dashboard_shows_fair_queue_metrics_for_both_queues(synth):
    widgets = _widgets(synth, SHARED)
    rows = [row for w in widgets for row in _metric_rows(w) if row[1] == QUIET_OLDEST_AGE]
    queues = sorted(synth.text(row[3]).split("Queue")[0] for row in rows)
    assert queues == ["<Jobs", "<Requests"]
