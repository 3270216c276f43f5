"""Least privilege across every IAM policy of the three stacks."""

from __future__ import annotations

import pytest

from exportpipe.infra.access import CONSUME_ACTIONS, TRACKING_ACTIONS

STACKS = ("ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker")


def _all_statements(synth):
    for stack in STACKS:
        for policy in synth.resources(stack, "AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                yield stack, statement


def _list(value):
    return value if isinstance(value, list) else [value]


def test_no_wildcard_actions_anywhere(synth):
    statements = list(_all_statements(synth))
    assert statements
    for stack, statement in statements:
        if statement["Effect"] == "Allow":
            for action in _list(statement["Action"]):
                assert "*" not in action, (stack, statement)


def test_only_the_ecr_login_has_a_star_resource(synth):
    for stack, statement in _all_statements(synth):
        if "*" in _list(statement["Resource"]):
            assert statement["Action"] == "ecr:GetAuthorizationToken", (stack, statement)


@pytest.mark.parametrize("stack", ["ExportPipeOrchestrator", "ExportPipeWorker"])
def test_task_roles_only_touch_shared_data_resources(synth, stack):
    statements = synth.task_statements(stack)
    assert statements
    for statement in statements.values():
        for resource in _list(statement["Resource"]):
            text = synth.text(resource)
            assert "<" in text, statement  # a reference to a resource, not a literal
            assert text != "*"


def test_action_lists_exclude_management_and_scans():
    assert set(CONSUME_ACTIONS) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
    }
    for action in TRACKING_ACTIONS:
        assert action.startswith("dynamodb:")
        assert action not in {"dynamodb:Scan", "dynamodb:DeleteTable", "dynamodb:UpdateTable"}


def test_execution_roles_read_only_their_own_image_logs_and_secret(synth):
    for stack in ("ExportPipeOrchestrator", "ExportPipeWorker"):
        service = stack.removeprefix("ExportPipe").lower()
        for statement in synth.statements(stack, "ExecutionRole"):
            text = synth.text(statement["Resource"])
            actions = _list(statement["Action"])
            if actions[0].startswith("ecr:Batch"):
                assert text.endswith(f":repository/exportpipe/{service}")
            elif actions[0].startswith("logs:"):
                assert text.startswith(f"<{service.title()}RuntimeLogs")
            elif actions[0].startswith("secretsmanager:"):
                assert stack == "ExportPipeOrchestrator"
                assert text.startswith("<ExportApiTokenSecret")
                assert set(actions) == {
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:DescribeSecret",
                }
            else:
                assert actions == ["ecr:GetAuthorizationToken"]
