"""One local stack and one simulator process shared by the end-to-end module.

Each test adds its own export to the simulator (``POST /_sim/exports``), starts the real
service processes it needs (``python -m exportpipe.orchestrator`` / ``exportpipe.worker``)
against the stack's env file, and stops them when it ends. Queues use a 10 s visibility
timeout so a killed process's messages come back quickly.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from exportpipe.common.layout import export_root
from exportpipe.common.sqs import queue_depth
from exportpipe.common.tracking import ExportState
from exportpipe.tools.context import Stack
from exportpipe.tools.launch import (
    RunningSimulator,
    service_environment,
    start_orchestrator,
    start_simulator,
    start_worker,
)
from exportpipe.tools.local import StackOptions, UpResult, down, up
from exportpipe.tools.processes import ProcessGroup, ServiceProcess
from exportpipe.tools.simulator import ExportSpec, SimulatorConfig

VISIBILITY_TIMEOUT = 10
TOKEN = "e2e-token"


class Services(ProcessGroup):
    """The service processes of one test; their logs go to ``log_dir``."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(grace=30)
        self.env, self.log_dir = env, log_dir
        self.expected_dead: set[str] = set()

    def orchestrator(self, name: str = "orchestrator") -> ServiceProcess:
        return start_orchestrator(self, self.env, log_dir=self.log_dir, name=name)

    def worker(self, name: str, **overrides: str) -> ServiceProcess:
        return start_worker(self, {**self.env, **overrides}, log_dir=self.log_dir, name=name)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.name not in self.expected_dead and not process.running():
                pytest.fail(
                    f"{process.name} exited with {process.returncode}; log {process.log_file}:\n"
                    + process.log_tail(30)
                )

    def logs(self) -> str:
        return f"service logs in {self.log_dir}"


@dataclass
class E2EStack:
    """The shared stack, its simulator, and helpers to observe an export."""

    state_dir: Path
    up: UpResult
    stack: Stack
    simulator: RunningSimulator
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.stack.bucket

    def add_export(self, spec: ExportSpec) -> ExportSpec:
        request = urllib.request.Request(
            f"{self.simulator.url}/_sim/exports",
            data=spec.model_dump_json().encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 201
        return spec

    def listing_requests(self, export_id: str) -> int:
        request = urllib.request.Request(
            f"{self.simulator.url}/_sim/requests",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            records = json.load(reply)["requests"]
        return sum(1 for r in records if r["route"] == "listing" and r["export_id"] == export_id)

    def services(self, name: str, **overrides: str) -> Services:
        env = service_environment(
            self.up.values,
            self.up.env_file,
            api_url=self.simulator.url,
            api_token=self.simulator.token,
            spool_dir=self.state_dir / "spool",
            overrides=overrides,
        )
        return Services(env, self.state_dir / "logs" / name)

    def root(self, export_id: str) -> str:
        return export_root(self.stack.output_prefix, export_id)

    def outcomes_in_s3(self, export_id: str) -> tuple[int, int]:
        """(manifests, rejection records) under the export's root."""
        s3 = self.stack.client("s3")
        manifests = rejected = 0
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root(export_id)):
            for obj in page.get("Contents", []):
                part = obj["Key"][len(self.root(export_id)) :].split("/", 1)[0]
                manifests += part == "manifests"
                rejected += part == "rejected"
        return manifests, rejected

    def jobs_backlog(self) -> int:
        """SQS 2's visible + in-flight messages."""
        url = self.up.values["EXPORTPIPE_JOBS_QUEUE_URL"]
        depth = queue_depth(self.stack.client("sqs"), url)
        return depth.visible + depth.in_flight

    def state(self, export_id: str) -> ExportState | None:
        return self.stack.tracker().get(export_id)

    def wait_until(
        self,
        condition: Callable[[], bool],
        what: str | Callable[[], str],
        services: Services,
        *,
        timeout: float = 60.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            services.check_alive()
            if time.monotonic() > deadline:
                text = what if isinstance(what, str) else what()
                pytest.fail(
                    f"timed out after {timeout:.0f} s waiting for {text}; {services.logs()}"
                )
            time.sleep(0.2)

    def wait_finished(
        self, spec: ExportSpec, services: Services, *, timeout: float = 60.0
    ) -> ExportState:
        """Wait until every file has an outcome in S3 and the tracker says finished."""
        outcomes = 0
        state: ExportState | None = None

        def done() -> bool:
            nonlocal outcomes, state
            outcomes = sum(self.outcomes_in_s3(spec.export_id))
            state = self.state(spec.export_id)
            return outcomes >= spec.count and state is not None and state.finished

        self.wait_until(
            done,
            lambda: (
                f"export {spec.export_id}: {spec.count} file outcomes and a finished "
                f"tracking record (have {outcomes} outcomes; tracker: {state})"
            ),
            services,
            timeout=timeout,
        )
        assert state is not None
        return state

    def completion_events(self, export_id: str) -> list[dict[str, Any]]:
        """Every ExportCompleted event published so far for ``export_id``."""
        sqs = self.stack.client("sqs")
        url = self.up.values["EXPORTPIPE_EVENTS_QUEUE_URL"]
        while True:
            batch = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                self.events.append(orjson.loads(message["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [e for e in self.events if e.get("export_id") == export_id]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """A local stack (``exportpipe local up``) and a simulator process for the module."""
    state_dir = tmp_path_factory.mktemp("e2e")
    result = up(state_dir / "stack", StackOptions(visibility_timeout=VISIBILITY_TIMEOUT))
    try:
        with ProcessGroup(grace=10) as group:
            simulator = start_simulator(group, SimulatorConfig(token=TOKEN), state_dir=state_dir)
            yield E2EStack(
                state_dir=state_dir,
                up=result,
                stack=Stack.load(result.env_file),
                simulator=simulator,
            )
    finally:
        down(state_dir / "stack")
