"""Composing the three stacks into one CDK app."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from exportpipe.infra.config import InfraConfig
from exportpipe.infra.orchestrator_stack import OrchestratorStack
from exportpipe.infra.shared_stack import SharedStack
from exportpipe.infra.worker_stack import WorkerStack

__all__ = ["STACK_NAMES", "ExportPipeApp", "build_app"]

STACK_NAMES = ("ExportPipeShared", "ExportPipeOrchestrator", "ExportPipeWorker")
"""Stack names, as the Makefile's deploy targets use them."""


@dataclass(frozen=True)
class ExportPipeApp:
    """The app and its three stacks."""

    app: App
    shared: SharedStack
    orchestrator: OrchestratorStack
    worker: WorkerStack


def build_app(
    config: InfraConfig,
    *,
    outdir: str | None = None,
    context: Mapping[str, Any] | None = None,
    nag: bool = True,
) -> ExportPipeApp:
    """Build the CDK app: the shared stack and one stack per service.

    Args:
        config: the deployment configuration.
        outdir: where ``synth()`` writes the cloud assembly (CDK's default otherwise).
        context: CDK context (feature flags from ``cdk.json``).
        nag: register cdk-nag's AwsSolutions checks, so that synthesis fails on any
            finding that is not acknowledged with a reason.
    """
    app = App(outdir=outdir, context=dict(context or {}))
    env = Environment(account=config.account, region=config.region)
    shared = SharedStack(
        app,
        STACK_NAMES[0],
        config=config,
        env=env,
        description="exportpipe shared resources: queues, bucket, table, cluster, alarms",
        # Stateful: whatever the environment, deleting it takes a deliberate step.
        termination_protection=True,
    )
    orchestrator = OrchestratorStack(
        app,
        STACK_NAMES[1],
        shared=shared.resources,
        config=config,
        env=env,
        description="exportpipe orchestrator service",
    )
    worker = WorkerStack(
        app,
        STACK_NAMES[2],
        shared=shared.resources,
        config=config,
        env=env,
        description="exportpipe worker service",
    )
    for stack in (orchestrator, worker):
        stack.add_stack_dependency(shared)
    Tags.of(app).add("project", "exportpipe")
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return ExportPipeApp(app=app, shared=shared, orchestrator=orchestrator, worker=worker)
