"""Issue 17: what the first real deployment needs, as AWS documents its behaviour.

Each test names the AWS behaviour it guards; ADR 0006/0007 and ``infra/cdk/README.md``
("Confirming on a real account") link the documentation and say how to confirm it.
"""

from __future__ import annotations

import json

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.infra.fleet_alarms import CAPACITY_GAP_MINUTES
from exportpipe.infra.queue_service import HEALTH_CHECK_COMMAND, HEALTH_CHECK_TIMING
from exportpipe.infra.shared_outputs import SHARED_OUTPUTS, SHARED_REVISION_PARAMETER

SHARED, ORCHESTRATOR, WORKER = "ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker"
SERVICES = (ORCHESTRATOR, WORKER)

RELEASED_OUTPUTS = (
    "RequestsQueueUrl",
    "JobsQueueUrl",
    "OutputBucketName",
    "ClusterName",
    "TrackingTableName",
    "EventsTopicArn",
    "ExportApiTokenSecretArn",
    "OrchestratorRepositoryUri",
    "WorkerRepositoryUri",
    "RequestsQueueArn",
    "RequestsDlqUrl",
    "RequestsDlqArn",
    "JobsQueueArn",
    "JobsDlqUrl",
    "JobsDlqArn",
    "TrackingTableArn",
    "VpcId",
    "TaskSubnetA",
    "TaskSubnetB",
    "AlarmTopicArn",
    "RequestsQueueName",
    "JobsQueueName",
)
"""Every shared output name ever released. A deployed service stack may read any of
them, so this list only grows and SHARED_OUTPUTS must keep each, in order."""


def _container(synth, stack):
    (container,) = synth.one(stack, "AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    return container


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# ------------------------------------------------------------- 1. scratch and PID 1


@pytest.mark.parametrize("stack", SERVICES)
def test_init_process_reaps_children_and_forwards_sigterm(synth, stack):
    assert _container(synth, stack)["LinuxParameters"]["InitProcessEnabled"] is True


# ------------------------------------------------------ 3. shared outputs and state


def test_shared_outputs_are_only_ever_added():
    assert SHARED_OUTPUTS[: len(RELEASED_OUTPUTS)] == RELEASED_OUTPUTS


def test_shared_stack_publishes_every_named_output_and_no_generated_one(synth):
    outputs = synth.templates[SHARED]["Outputs"]
    assert tuple(outputs) == SHARED_OUTPUTS
    for name in outputs:
        assert "Export" not in outputs[name]  # no exports: nothing locks the shared stack


@pytest.mark.parametrize("stack", SERVICES)
def test_service_stacks_read_shared_values_only_through_named_outputs(synth, stack):
    template = synth.templates[stack]
    read = [
        node["Fn::GetStackOutput"]
        for node in _walk(template)
        if isinstance(node, dict) and "Fn::GetStackOutput" in node
    ]
    assert read
    assert {r["StackName"] for r in read} == {SHARED}
    assert {r["OutputName"] for r in read} <= set(SHARED_OUTPUTS)
    text = json.dumps(template)
    assert "ExportsOutput" not in text
    assert "PublishOutput" not in text
    assert "Fn::ImportValue" not in text


@pytest.mark.parametrize("stack", SERVICES)
def test_shared_revision_parameter_reaches_the_task_definition(synth, stack):
    template = synth.templates[stack]
    parameter = template["Parameters"][SHARED_REVISION_PARAMETER]
    assert parameter["Type"] == "String"
    assert parameter["Default"]  # a first deploy without CI's value still works
    labels = _container(synth, stack)["DockerLabels"]
    assert labels["exportpipe.shared-revision"] == {"Ref": SHARED_REVISION_PARAMETER}


def test_queues_table_and_bucket_are_retained(synth):
    template = synth.templates[SHARED]["Resources"]
    for kind in ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::S3::Bucket"):
        found = {name: res for name, res in template.items() if res["Type"] == kind}
        assert found, kind
        for name, resource in found.items():
            assert resource.get("DeletionPolicy") == "Retain", name
            assert resource.get("UpdateReplacePolicy") == "Retain", name


def test_stateful_stack_has_termination_protection_in_every_environment(synth):
    # The test app is environment-agnostic (no account): protection must not depend on it.
    assert synth.app.node.find_child(SHARED).termination_protection is True
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    assert manifest["artifacts"][SHARED]["properties"]["terminationProtection"] is True


# ------------------------------------------------------------- 5. a broken image


@pytest.mark.parametrize("stack", SERVICES)
def test_task_definition_has_the_container_health_check(synth, stack):
    # ECS ignores an image's HEALTHCHECK; only the task definition's runs.
    check = _container(synth, stack)["HealthCheck"]
    assert check["Command"] == ["CMD", *HEALTH_CHECK_COMMAND]
    assert check["Interval"] == HEALTH_CHECK_TIMING["interval"]
    assert check["Timeout"] == HEALTH_CHECK_TIMING["timeout"]
    assert check["StartPeriod"] == HEALTH_CHECK_TIMING["start_period"]
    assert check["Retries"] == HEALTH_CHECK_TIMING["retries"]


def _rules(synth, stack):
    return {
        name: res["Properties"]
        for name, res in synth.resources(stack, "AWS::Events::Rule").items()
        if name.startswith("FleetAlarms")
    }


def _alarm_topic_targets(synth, rule):
    return [synth.text(t["Arn"]) for t in rule["Targets"]]


@pytest.mark.parametrize("stack", SERVICES)
def test_failed_deployments_notify_the_alarm_topic(synth, stack):
    (rule,) = [r for n, r in _rules(synth, stack).items() if "DeploymentFailed" in n]
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["ECS Deployment State Change"]
    assert pattern["detail"] == {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]}
    assert synth.text(pattern["resources"]).startswith("<")  # this service's ARN
    (target,) = _alarm_topic_targets(synth, rule)
    assert target.startswith("<MonitoringAlarmTopic")


@pytest.mark.parametrize("stack", SERVICES)
def test_stopped_or_failing_tasks_notify_and_alarm(synth, stack):
    rules = _rules(synth, stack)
    (failed,) = [r for n, r in rules.items() if "TaskFailedToStart" in n]
    (exited,) = [r for n, r in rules.items() if "TaskExitedNonZero" in n]
    assert failed["EventPattern"]["detail"]["stopCode"] == ["TaskFailedToStart"]
    detail = exited["EventPattern"]["detail"]
    assert detail["lastStatus"] == ["STOPPED"]
    assert detail["containers"] == {"exitCode": [{"anything-but": 0}]}
    # A Spot reclaim is expected, not an impairment.
    assert "SpotInterruption" in detail["stopCode"][0]["anything-but"]
    for rule in (failed, exited):
        (target,) = _alarm_topic_targets(synth, rule)
        assert target.startswith("<MonitoringAlarmTopic")
    alarm = synth.one(stack, "AWS::CloudWatch::Alarm", "FleetAlarmsTasksFailing")
    assert alarm["Threshold"] == 3


def test_eventbridge_may_publish_to_the_alarm_topic(synth):
    policy = synth.one(SHARED, "AWS::SNS::TopicPolicy", "MonitoringAlarmTopicPolicy")
    statements = {s.get("Sid"): s for s in policy["PolicyDocument"]["Statement"]}
    publish = statements["EventBridgePublishesFleetEvents"]
    assert publish["Principal"] == {"Service": "events.amazonaws.com"}
    assert publish["Action"] == "sns:Publish"
    assert "aws:SourceAccount" in publish["Condition"]["StringEquals"]


def test_worker_alarms_when_at_its_maximum(synth):
    alarm = synth.one(WORKER, "AWS::CloudWatch::Alarm", "FleetAlarmsAtMaximum")
    assert alarm["MetricName"] == "DesiredTaskCount"
    assert alarm["Threshold"] == DEFAULT_DEPLOYMENT.worker.max_tasks - 0.5
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["EvaluationPeriods"] == 15


# ----------------------------------------------------- 6. tasks that fail to start


def test_worker_alarms_when_desired_exceeds_running_for_ten_minutes(synth):
    alarm = synth.one(WORKER, "AWS::CloudWatch::Alarm", "FleetAlarmsCapacityGap")
    (expr,) = [m for m in alarm["Metrics"] if m.get("ReturnData", True) and "Expression" in m]
    assert expr["Expression"] == "FILL(desired, 0) - FILL(running, 0)"
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] == CAPACITY_GAP_MINUTES == 10
    periods = {m["MetricStat"]["Period"] for m in alarm["Metrics"] if "MetricStat" in m}
    assert periods == {60}
    actions = [synth.text(a) for a in alarm["AlarmActions"]]
    assert all(a.startswith("<MonitoringAlarmTopic") for a in actions)


# ------------------------------------------------------------------ 7. hardening


@pytest.mark.parametrize("stack", SERVICES)
def test_egress_is_https_only(synth, stack):
    (group,) = [
        res["Properties"] for res in synth.resources(stack, "AWS::EC2::SecurityGroup").values()
    ]
    assert group["SecurityGroupEgress"] == [
        {
            "CidrIp": "0.0.0.0/0",
            "Description": "HTTPS to AWS APIs and the vendor",
            "FromPort": 443,
            "IpProtocol": "tcp",
            "ToPort": 443,
        }
    ]
    assert "SecurityGroupIngress" not in group


@pytest.mark.parametrize("stack", SERVICES)
def test_services_run_arm64_on_a_platform_version_where_spot_supports_it(synth, stack):
    task = synth.one(stack, "AWS::ECS::TaskDefinition")
    assert task["RuntimePlatform"] == {
        "CpuArchitecture": "ARM64",
        "OperatingSystemFamily": "LINUX",
    }
    # FARGATE_SPOT supports ARM64 from platform version 1.4.0 (CapacityProviderStrategyItem).
    assert synth.one(stack, "AWS::ECS::Service")["PlatformVersion"] == "1.4.0"
