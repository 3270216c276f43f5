"""``exportpipe demo`` (``make demo``): one real export through the whole system.

The steps and the checks it must pass to exit 0 are docs/operations.md, *Quick start*:
a fresh local stack, the simulator serving a mixed export with one corrupt file, one
orchestrator and ``--workers`` workers, the export submitted and followed, a summary,
every byte verified (:mod:`exportpipe.tools.verify`), everything torn down pass or fail.
Logs stay in the state directory (printed on failure, removed after a success unless
``--keep``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from exportpipe.common.tracking import ExportState
from exportpipe.tools.context import Stack
from exportpipe.tools.dlq import DeadLetter, list_dead_letters
from exportpipe.tools.errors import EXIT_FAILED, EXIT_OK, CliError
from exportpipe.tools.launch import (
    service_environment,
    start_orchestrator,
    start_simulator,
    start_worker,
)
from exportpipe.tools.local import StackOptions, down, up
from exportpipe.tools.processes import ProcessGroup
from exportpipe.tools.simulator import ExportSpec, FileSpec, SimulatorConfig
from exportpipe.tools.status import human_bytes, rejected_files, transfer_rate
from exportpipe.tools.submit import WaitTimeout, submit_export, wait_for_export
from exportpipe.tools.verify import VerifyReport, verify_export

__all__ = ["CORRUPT_FILE_ID", "DemoOptions", "demo_export", "run_demo"]

DEMO_EXPORT_ID = "demo-export"
DEMO_TOKEN = "demo-token"  # noqa: S105 - the local simulator's token
CORRUPT_FILE_ID = "corrupt-download"
UNDECLARED_FILE_ID = "undeclared-compression"


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """How big a demo, and where its state goes.

    Attributes:
        files: files in the export (at least 3: two special ones and generated files).
        workers: worker processes.
        state_dir: keep state and logs here (default: a new temporary directory).
        keep: keep the state directory after a success too.
        timeout: give up waiting for the export after this many seconds.
        file_size: uncompressed bytes of each generated file.
    """

    files: int = 36
    workers: int = 2
    state_dir: Path | None = None
    keep: bool = False
    timeout: float = 150.0
    file_size: int = 256 * 1024

    def __post_init__(self) -> None:
        if self.files < 3:
            raise CliError("--files must be at least 3 (two special files and a generated one)")
        if not 1 <= self.workers <= 16:
            raise CliError("--workers must be between 1 and 16")


def demo_export(
    export_id: str = DEMO_EXPORT_ID, files: int = 36, *, file_size: int = 256 * 1024
) -> ExportSpec:
    """The demo's export: ``files`` mixed files, one undeclared compression, one corrupt."""
    if files < 3:
        raise CliError("--files must be at least 3")
    special = (
        FileSpec(
            file_id=UNDECLARED_FILE_ID,
            name="events-undeclared.jsonl.zst",
            kind="jsonl.zst",
            size_bytes=file_size,
            seed=7,
            declare_compression=False,
        ),
        # Served bytes differ from the listed sha256: the worker must refuse it.
        FileSpec(
            file_id=CORRUPT_FILE_ID,
            name="corrupt-download.bin",
            kind="bin",
            size_bytes=file_size,
            seed=11,
            corrupt="flip_byte",
        ),
    )
    return ExportSpec(
        export_id=export_id,
        seed=2024,
        files=special,
        generated=files - len(special),
        file_size=file_size,
        page_size=10,
    )


@dataclass
class _Outcome:
    state: ExportState
    report: VerifyReport
    dead_letter: DeadLetter | None
    tracker_reason: str | None
    event: dict[str, Any] | None
    manifest: dict[str, Any] | None
    exit_codes: dict[str, int]


def _watch(group: ProcessGroup) -> Callable[[], None]:
    def check() -> None:
        for process in group.processes:
            if not process.running():
                raise CliError(
                    f"{process.name} exited with status {process.returncode} "
                    f"(log: {process.log_file})",
                    exit_code=EXIT_FAILED,
                )

    return check


def _read_event(stack: Stack, export_id: str) -> dict[str, Any] | None:
    url = stack.get("EXPORTPIPE_EVENTS_QUEUE_URL")
    if url is None:
        return None
    sqs = stack.client("sqs")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            body = orjson.loads(message["Body"])
            if isinstance(body, dict) and body.get("export_id") == export_id:
                return body
    return None


def _read_manifest(stack: Stack, state: ExportState) -> dict[str, Any] | None:
    if not state.manifest_key:
        return None
    raw = stack.client("s3").get_object(Bucket=state.bucket, Key=state.manifest_key)["Body"]
    value = orjson.loads(raw.read())
    return value if isinstance(value, dict) else None


def _summary(outcome: _Outcome, spec: ExportSpec, console: Console) -> None:
    state, report = outcome.state, outcome.report
    seconds = max(state.last_activity - state.first_activity, 1e-3)
    table = Table(title=f"export {escape(spec.export_id)}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("status", state.status)
    table.add_row("files listed", str(spec.count))
    table.add_row("files landed (byte-exact)", f"{len(report.landed)} of {spec.count - 1}")
    for verdict in report.rejected:
        table.add_row("rejected", f"{escape(verdict.file_id)}: {escape(verdict.reason or '')}")
    table.add_row("bytes downloaded", f"{human_bytes(state.bytes)} ({state.bytes})")
    table.add_row("bytes landed (uncompressed)", f"{human_bytes(report.bytes)} ({report.bytes})")
    table.add_row("time (first to last activity)", f"{seconds:.1f} s")
    # The progress line's rate (bytes downloaded over the same window), not landed bytes.
    rate = transfer_rate(state, state.last_activity)
    table.add_row("throughput", f"{spec.count / seconds:.1f} files/s, {human_bytes(rate)}/s")
    table.add_row("output", f"s3://{state.bucket}/{escape(state.prefix)}")
    if state.manifest_key:
        table.add_row("manifest", f"s3://{state.bucket}/{escape(state.manifest_key)}")
    if outcome.dead_letter is not None:
        table.add_row(
            "dead letter (SQS 2 DLQ)",
            f"{outcome.dead_letter.message_id}: {escape(outcome.dead_letter.reason)}",
        )
    if outcome.event is not None:
        table.add_row("ExportCompleted event", str(outcome.event.get("status")))
    console.print(table)


def _checks(outcome: _Outcome, spec: ExportSpec) -> list[tuple[str, bool]]:
    state, report = outcome.state, outcome.report
    rejected = report.rejected
    reason = rejected[0].reason if len(rejected) == 1 else None
    letter = outcome.dead_letter
    manifest = outcome.manifest or {}
    return [
        ("every good file landed byte-exact", len(report.landed) == spec.count - 1),
        ("the corrupt file was rejected with a reason", len(rejected) == 1),
        (
            "its dead letter carries the same reason",
            letter is not None and reason is not None and letter.reason == reason,
        ),
        (
            "tracking: completed_with_errors, counts match",
            state.status == "completed_with_errors"
            and state.files_expected == spec.count
            and state.files_done == spec.count - 1
            and state.files_rejected == 1,
        ),
        ("the tracker recorded the rejection reason", bool(outcome.tracker_reason)),
        (
            "export manifest lists every file",
            len(manifest.get("files", [])) == spec.count - 1
            and len(manifest.get("rejected", [])) == 1,
        ),
        (
            "ExportCompleted event published",
            outcome.event is not None and outcome.event.get("status") == "completed_with_errors",
        ),
        (
            "every process stopped cleanly on SIGTERM",
            all(c == 0 for c in outcome.exit_codes.values()),
        ),
    ]


def _run(options: DemoOptions, state_dir: Path, console: Console) -> _Outcome:
    log_dir = state_dir / "logs"
    spec = demo_export(files=options.files, file_size=options.file_size)
    console.print(f"[bold]1/5[/bold] local stack in {escape(str(state_dir / 'stack'))}")
    stack_up = up(state_dir / "stack", StackOptions(visibility_timeout=30))
    stack = Stack.load(stack_up.env_file)
    with ProcessGroup(grace=30) as group:
        console.print(
            f"[bold]2/5[/bold] simulator: export {spec.export_id} with {spec.count} files "
            f"(one corrupt: {CORRUPT_FILE_ID}, one with compression null)"
        )
        sim = start_simulator(
            group, SimulatorConfig(token=DEMO_TOKEN, exports=(spec,)), state_dir=state_dir
        )
        env = service_environment(
            stack_up.values,
            stack_up.env_file,
            api_url=sim.url,
            api_token=sim.token,
            spool_dir=state_dir / "spool",
        )
        console.print(f"[bold]3/5[/bold] 1 orchestrator + {options.workers} workers")
        start_orchestrator(group, env, log_dir=log_dir)
        for n in range(1, options.workers + 1):
            start_worker(group, env, log_dir=log_dir, name=f"worker-{n}")
        console.print(f"[bold]4/5[/bold] submit {spec.export_id}")
        submit_export(stack, spec.export_id)
        try:
            state = wait_for_export(
                stack,
                spec.export_id,
                console=console,
                timeout=options.timeout,
                check=_watch(group),
            )
        except WaitTimeout:
            raise CliError(
                f"export {spec.export_id} did not finish within {options.timeout:.0f} s",
                exit_code=EXIT_FAILED,
            ) from None
        exit_codes = group.stop_all()
    console.print("[bold]5/5[/bold] verify every byte in S3 against the simulator's files")
    report = verify_export(stack.client("s3"), state.bucket, state.prefix, spec)
    letters = [
        d
        for d in list_dead_letters(stack, ("jobs",))
        if f"file={CORRUPT_FILE_ID}" in d.summary.split()
    ]
    rejected = rejected_files(stack.tracker(), spec.export_id)
    tracker_reason = next((why for file_id, why in rejected if file_id == CORRUPT_FILE_ID), None)
    return _Outcome(
        state=state,
        report=report,
        dead_letter=letters[0] if len(letters) == 1 else None,
        tracker_reason=tracker_reason,
        event=_read_event(stack, spec.export_id),
        manifest=_read_manifest(stack, state),
        exit_codes=exit_codes,
    )


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the demo; returns the exit status (0 only if every check passed)."""
    started = time.monotonic()
    temporary = options.state_dir is None
    state_dir = (options.state_dir or Path(tempfile.mkdtemp(prefix="exportpipe-demo-"))).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]exportpipe demo")
    outcome: _Outcome | None = None
    error: CliError | None = None
    try:
        outcome = _run(options, state_dir, console)
    except CliError as exc:
        error = exc
    finally:
        down(state_dir / "stack")
    passed = False
    if outcome is not None:
        spec = demo_export(files=options.files, file_size=options.file_size)
        _summary(outcome, spec, console)
        checks = _checks(outcome, spec)
        for name, ok in checks:
            console.print(("[green]PASS[/green] " if ok else "[red]FAIL[/red] ") + name)
        for verdict in outcome.report.problems:
            console.print(
                f"  [red]{escape(verdict.file_id)}[/red]: {escape(verdict.problem or '')}"
            )
        for name, code in outcome.exit_codes.items():
            if code != 0:  # which process did not stop cleanly, for its log
                console.print(f"  [red]{escape(name)}[/red] exited with {code} on SIGTERM")
        passed = all(ok for _, ok in checks)
    elapsed = time.monotonic() - started
    if passed:
        console.print(f"[green bold]demo passed[/] in {elapsed:.0f} s")
        if temporary and not options.keep:
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            console.print(f"state and logs kept in {escape(str(state_dir))}")
        return EXIT_OK
    if error is not None:
        console.print(f"[red bold]demo failed:[/] {escape(error.message)}")
    else:
        console.print(f"[red bold]demo failed[/] after {elapsed:.0f} s")
    console.print(f"service logs: {escape(str(state_dir / 'logs'))}")
    return EXIT_FAILED
