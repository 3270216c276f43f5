"""cfn-lint on every synthesized template."""

from __future__ import annotations

import pytest
from cfnlint.api import ManualArgs, lint_file

STACKS = ("ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker")


@pytest.mark.parametrize("stack", STACKS)
def test_cfn_lint_passes(synth, stack):
    matches = lint_file(
        synth.outdir / f"{stack}.template.json",
        config=ManualArgs(regions=["us-east-1", "eu-west-1"]),
    )
    assert [f"{m.rule.id} {m.message} ({m.linenumber})" for m in matches] == []


def test_cfn_lint_would_report_a_bad_fargate_pair(synth, tmp_path):
    import json

    template = json.loads((synth.outdir / "ExportPipeOrchestrator.template.json").read_text())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            resource["Properties"]["Memory"] = "512"  # 0.5 vCPU needs at least 1 GiB
    path = tmp_path / "bad.template.json"
    path.write_text(json.dumps(template))
    assert {m.rule.id for m in lint_file(path, config=ManualArgs(regions=["us-east-1"]))} == {
        "E3047"
    }
