"""The worker's step scaling on SQS 2 backlog per task, against ``WorkerScaling``."""

from __future__ import annotations

import re

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

WORKER = "ExportPipeWorker"
POLICY = DEFAULT_DEPLOYMENT.worker_scaling
# Admission by budget (ADR 0015): jobs per task at the scaling file size, not the
# thread cap (32); four with the defaults, as before.
JOBS_PER_TASK = DEFAULT_DEPLOYMENT.worker_jobs_per_task
assert JOBS_PER_TASK == 4
TASKS = "IF(FILL(running, 0) > FILL(desired, 0), FILL(running, 0), FILL(desired, 0))"


def _find(synth, kind, name):
    found = [
        res["Properties"]
        for logical_id, res in synth.resources(WORKER, kind).items()
        if name in logical_id
    ]
    assert len(found) == 1, f"{len(found)} {kind} named *{name}*"
    return found[0]


def _metrics(alarm):
    return {m["Id"]: m for m in alarm["Metrics"]}


def _expression(alarm):
    (expr,) = [m for m in alarm["Metrics"] if m.get("ReturnData")]
    return expr["Expression"]


def test_load_ratio_counts_in_flight_messages_per_task_running_or_desired(synth):
    # Issue 17: dividing by running tasks alone compounds +300 % steps while tasks fail
    # to start (the steps apply to the desired count); max(running, desired) does not.
    alarm = _find(synth, "AWS::CloudWatch::Alarm", "ScaleOutOnBacklog")
    assert _expression(alarm) == f"(visible + inFlight) / IF(tasks < 1, 1, tasks) / {JOBS_PER_TASK}"
    metrics = _metrics(alarm)
    assert metrics["tasks"]["Expression"] == TASKS
    assert metrics["tasks"]["ReturnData"] is False
    for metric_id, name in (
        ("visible", "ApproximateNumberOfMessagesVisible"),
        ("inFlight", "ApproximateNumberOfMessagesNotVisible"),
    ):
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "AWS/SQS"
        assert stat["Metric"]["MetricName"] == name
        assert stat["Period"] == POLICY.metric_period_seconds
        (dimension,) = stat["Metric"]["Dimensions"]
        assert dimension["Name"] == "QueueName"
        # The queue name, from the shared stack's fixed-name JobsQueueName output.
        assert re.fullmatch(r"<JobsQueue[0-9A-F]{8}\.QueueName>", synth.text(dimension["Value"]))
    for metric_id, name in (("running", "RunningTaskCount"), ("desired", "DesiredTaskCount")):
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "ECS/ContainerInsights"
        assert stat["Metric"]["MetricName"] == name
        dims = {d["Name"]: synth.text(d["Value"]) for d in stat["Metric"]["Dimensions"]}
        assert dims["ClusterName"].startswith("<Cluster")
        assert re.fullmatch(r"<WorkerRuntimeService[0-9A-F]{8}\.Name>", dims["ServiceName"])


def test_scale_out_is_fast_and_follows_the_steps(synth):
    alarm = _find(synth, "AWS::CloudWatch::Alarm", "ScaleOutOnBacklog")
    first = POLICY.scale_out_steps[0].lower
    assert alarm["Threshold"] == first
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == POLICY.scale_out_evaluation_periods == 1
    config = _find(synth, "AWS::ApplicationAutoScaling::ScalingPolicy", "ScaleOutOnBacklog")[
        "StepScalingPolicyConfiguration"
    ]
    assert config["AdjustmentType"] == "PercentChangeInCapacity"
    assert config["MinAdjustmentMagnitude"] == POLICY.scale_out_min_change
    assert config["Cooldown"] == POLICY.scale_out_cooldown_seconds
    expected = []
    for step in POLICY.scale_out_steps:
        adjustment = {
            "MetricIntervalLowerBound": pytest.approx(step.lower - first),
            "ScalingAdjustment": step.percent,
        }
        if step.upper is not None:
            adjustment["MetricIntervalUpperBound"] = pytest.approx(step.upper - first)
        expected.append(adjustment)
    assert config["StepAdjustments"] == expected


def test_scale_in_is_slow(synth):
    alarm = _find(synth, "AWS::CloudWatch::Alarm", "ScaleInOnBacklog")
    assert _expression(alarm) == f"(visible + inFlight) / IF(tasks < 1, 1, tasks) / {JOBS_PER_TASK}"
    assert alarm["Threshold"] == POLICY.scale_in_below_ratio
    assert alarm["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert alarm["EvaluationPeriods"] == POLICY.scale_in_evaluation_periods
    assert alarm["DatapointsToAlarm"] == POLICY.scale_in_evaluation_periods
    assert POLICY.scale_in_evaluation_periods > POLICY.scale_out_evaluation_periods
    config = _find(synth, "AWS::ApplicationAutoScaling::ScalingPolicy", "ScaleInOnBacklog")[
        "StepScalingPolicyConfiguration"
    ]
    assert config["AdjustmentType"] == "PercentChangeInCapacity"
    assert config["StepAdjustments"] == [
        {"MetricIntervalUpperBound": 0, "ScalingAdjustment": POLICY.scale_in_percent}
    ]
    assert config["Cooldown"] == POLICY.scale_in_cooldown_seconds


def test_activation_starts_tasks_from_zero_when_messages_wait(synth):
    alarm = _find(synth, "AWS::CloudWatch::Alarm", "ActivateFromZero")
    assert _expression(alarm) == "IF(FILL(running, 0) < 1 AND visible > 0, 1, 0)"
    assert set(_metrics(alarm)) == {"expr_1", "visible", "running"}
    assert alarm["Threshold"] == 1
    assert alarm["EvaluationPeriods"] == 1
    config = _find(synth, "AWS::ApplicationAutoScaling::ScalingPolicy", "ActivateFromZero")[
        "StepScalingPolicyConfiguration"
    ]
    assert config["AdjustmentType"] == "ChangeInCapacity"
    assert config["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0, "ScalingAdjustment": POLICY.activation_tasks}
    ]
    assert DEFAULT_DEPLOYMENT.worker.min_tasks == 0


def test_every_scaling_alarm_triggers_its_policy(synth):
    alarms = {
        name: alarm
        for name, alarm in synth.resources(WORKER, "AWS::CloudWatch::Alarm").items()
        if not name.startswith("FleetAlarms")  # those notify people, not policies
    }
    policies = synth.resources(WORKER, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert len(alarms) == len(policies) == 3
    for alarm in alarms.values():
        (action,) = alarm["Properties"]["AlarmActions"]
        assert action["Ref"] in policies


def test_no_target_tracking_policy_races_the_queue_policy(synth):
    for stack in ("ExportPipeWorker", "ExportPipeOrchestrator"):
        for policy in synth.resources(stack, "AWS::ApplicationAutoScaling::ScalingPolicy").values():
            assert policy["Properties"]["PolicyType"] == "StepScaling"
