"""``app.py``, the entry point ``make synth`` and the cdk CLI run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CDK_DIR = Path(__file__).resolve().parents[1]


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDK_", "EXPORTPIPE_"))}
    return subprocess.run(
        [sys.executable, str(CDK_DIR / "app.py")],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.mark.slow
def test_synthesizes_the_three_stacks_under_the_cli_contract(tmp_path):
    # The cdk CLI hands the app its output directory and cdk.json's context.
    context = json.loads((CDK_DIR / "cdk.json").read_text())["context"]
    result = _run({"CDK_OUTDIR": str(tmp_path), "CDK_CONTEXT_JSON": json.dumps(context)})
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    stacks = {
        name
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    }
    assert stacks == {"ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker"}
    assert "Node 20" not in result.stderr


@pytest.mark.slow
def test_bad_configuration_exits_2_naming_the_variable(tmp_path):
    result = _run({"CDK_OUTDIR": str(tmp_path), "EXPORTPIPE_NAT_GATEWAYS": "many"})
    assert result.returncode == 2
    assert "EXPORTPIPE_NAT_GATEWAYS" in result.stderr
    assert not (tmp_path / "manifest.json").exists()
