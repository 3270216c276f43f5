"""Acknowledging cdk-nag findings, each with its reason."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

__all__ = ["acknowledge", "wildcard_resource_finding"]


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge cdk-nag finding ``rule`` on ``construct`` (and its children).

    Args:
        construct: where the finding is reported.
        rule: the finding, e.g. ``AwsSolutions-S1`` or
            ``AwsSolutions-IAM5[Resource::<Bucket.Arn>/exports/*]``.
        reason: why it is acceptable here; required, and shown in the nag report.
    """
    if not reason.strip():
        raise ValueError(f"acknowledging {rule} needs a reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def wildcard_resource_finding(scope: IConstruct, resource: str) -> str:
    """The ``AwsSolutions-IAM5`` finding id cdk-nag reports for ``resource`` in a policy.

    cdk-nag names a wildcard resource by its CloudFormation value flattened to text
    (``Ref`` and ``Fn::GetAtt`` in angle brackets, ``Fn::Join`` joined, anything else
    as compact JSON); deriving it here keeps acknowledgments exact when a cross-stack
    reference's generated name changes.
    """
    return f"AwsSolutions-IAM5[Resource::{_flatten(Stack.of(scope).resolve(resource))}]"


def _flatten(node: Any) -> str:
    # Mirrors cdk-nag's utils/flatten-cfn-reference.
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"), ensure_ascii=False)
