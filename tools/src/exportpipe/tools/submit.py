"""``exportpipe submit``: put an ``ExportRequested`` on SQS 1 and, optionally, wait.

What ``--wait`` shows (a live bar, or whole lines when piped), its notice when no
orchestrator takes the request, and how its exit status says the export ended are
docs/operations.md, *exportpipe submit*.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from exportpipe.common.layout import export_root, is_under
from exportpipe.common.schemas import ExportRequested, encode
from exportpipe.common.sqs import queue_depth
from exportpipe.common.tenancy import message_group_id
from exportpipe.common.tracking import SUBMITTED, ExportState
from exportpipe.tools.context import Stack
from exportpipe.tools.errors import (
    EXIT_COMPLETED_WITH_ERRORS,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
)
from exportpipe.tools.status import human_bytes, transfer_rate

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "PICKUP_SECONDS",
    "Submitted",
    "WaitTimeout",
    "exit_code_for",
    "submit_export",
    "wait_for_export",
]

DEFAULT_WAIT_SECONDS = 900.0
"""``submit --wait`` gives up after this long unless ``--timeout`` says otherwise."""
PICKUP_SECONDS = 15.0
"""After this long with the request untouched on SQS 1, ``--wait`` says no orchestrator runs."""
_EXIT_CODES = {"completed": EXIT_OK, "completed_with_errors": EXIT_COMPLETED_WITH_ERRORS}


class WaitTimeout(CliError):
    """The export did not finish within the wait's timeout (it may still be running)."""


@dataclass(frozen=True)
class Submitted:
    """A submitted request."""

    export_id: str
    message_id: str
    output: str


def submit_export(
    stack: Stack, export_id: str, *, tenant: str | None = None, prefix: str | None = None
) -> Submitted:
    """Send ``ExportRequested(export_id)`` to SQS 1, in the tenant's message group.

    Args:
        stack: where to send it.
        export_id: the vendor's export id.
        tenant: optional tenant id carried on every job.
        prefix: destination key prefix under ``EXPORTPIPE_OUTPUT_PREFIX`` (default: that
            prefix itself); files land under ``{prefix}{export_id}/``.

    Raises:
        CliError: an invalid export id, tenant or prefix (also one outside the output
            prefix, which the services would refuse), or missing settings.
    """
    try:
        request = ExportRequested(export_id=export_id, tenant=tenant, destination_prefix=prefix)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "request"
        raise CliError(f"invalid {field}: {err['msg']}") from None
    prefix_root = request.destination_prefix or stack.output_prefix
    if not is_under(prefix_root, stack.output_prefix):
        # The services dead-letter such a request; say so before sending it.
        raise CliError(
            f"--prefix {prefix!r} must be under the output prefix {stack.output_prefix!r} "
            f"(EXPORTPIPE_OUTPUT_PREFIX), e.g. {stack.output_prefix}{prefix}"
        )
    queue_url = stack.require("EXPORTPIPE_REQUESTS_QUEUE_URL")
    bucket = stack.get("EXPORTPIPE_BUCKET") or "<bucket>"
    # The tenant's group makes SQS 1 a fair queue (ADR 0018).
    sent = stack.client("sqs").send_message(
        QueueUrl=queue_url, MessageBody=encode(request), MessageGroupId=message_group_id(request)
    )
    root = export_root(prefix_root, export_id)
    if stack.get("EXPORTPIPE_TABLE") is not None:
        # So `status` knows the export before an orchestrator lists it.
        stack.tracker().record_request(export_id, bucket=bucket, prefix=root, tenant=tenant)
    return Submitted(
        export_id=export_id, message_id=str(sent["MessageId"]), output=f"s3://{bucket}/{root}"
    )


def exit_code_for(state: ExportState) -> int:
    """0 completed, 3 completed_with_errors, 1 failed."""
    return _EXIT_CODES.get(state.status, EXIT_FAILED)


def _describe(state: ExportState | None, now: float, stall_seconds: float) -> str:
    if state is None or state.status == SUBMITTED:
        return "waiting for an orchestrator"
    if state.finished:
        return state.status
    text = "copying" if state.listing_complete else f"listing (page {state.pages_listed})"
    if state.is_stalled(now, stall_seconds):
        text += f" [red]stalled {now - state.last_activity:.0f} s[/red]"
    return text


def _rate(state: ExportState, now: float) -> str:
    return f"{human_bytes(transfer_rate(state, now))}/s"


def _line(export_id: str, state: ExportState | None, description: str, now: float) -> str:
    """The progress as one plain line (output that is not a terminal)."""
    if state is None or state.status == SUBMITTED:
        return f"{export_id} {description}"
    total = str(state.files_expected) if state.listing_complete else f"{state.files_expected}+"
    return (
        f"{export_id} {description}: {state.files_done + state.files_rejected}/{total} files"
        f" · {state.files_rejected} rejected · {human_bytes(state.bytes)} · {_rate(state, now)}"
    )


def _nobody_picked_up(stack: Stack, export_id: str, waited: float) -> str | None:
    """The notice to print when SQS 1 holds requests that no orchestrator receives."""
    url = stack.get("EXPORTPIPE_REQUESTS_QUEUE_URL")
    if url is None:
        return None
    depth = queue_depth(stack.client("sqs"), url)
    if depth.in_flight or not depth.visible:
        return None  # an orchestrator holds it (the export may still be pending upstream)
    hint = (
        "locally, `exportpipe local ps` shows what runs and `exportpipe local up` starts "
        "the orchestrator and workers"
        if stack.endpoint
        else "check the orchestrator service (desired count, logs)"
    )
    return (
        f"no orchestrator has picked up export {export_id} after {waited:.0f} s "
        f"({depth.visible} request(s) waiting on SQS 1); {hint}. Still waiting (Ctrl-C stops "
        "waiting, not the export)."
    )


class _Display:
    """Live progress bar on a terminal; whole lines, when something changed, otherwise."""

    def __init__(self, console: Console, export_id: str, *, line_seconds: float) -> None:
        self.console = console
        self.export_id = export_id
        self.live = console.is_terminal
        self.line_seconds = line_seconds
        self._last_line = ""
        self._last_print = 0.0
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[export_id]}[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[rejected]} rejected · {task.fields[bytes]}"),
            TextColumn("· {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self.live,
        )
        self.task = self.progress.add_task(
            "waiting", total=None, export_id=export_id, rejected=0, bytes="0 B", rate="-"
        )

    def update(self, state: ExportState | None, description: str, now: float) -> None:
        if state is not None and state.status != SUBMITTED:
            self.progress.update(
                self.task,
                completed=state.files_done + state.files_rejected,
                total=state.files_expected if state.listing_complete or state.finished else None,
                rejected=state.files_rejected,
                bytes=human_bytes(state.bytes),
                rate=_rate(state, now),
            )
        self.progress.update(self.task, description=description)
        if self.live:
            return
        line = _line(self.export_id, state, Text.from_markup(description).plain, now)
        changed = line.rsplit(" · ", 1)[0] != self._last_line.rsplit(" · ", 1)[0]
        finished = state is not None and state.finished
        if changed or finished or time.monotonic() - self._last_print >= self.line_seconds:
            self.console.print(escape(line), soft_wrap=True, highlight=False)
            self._last_line, self._last_print = line, time.monotonic()

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/yellow]", soft_wrap=True)


def wait_for_export(
    stack: Stack,
    export_id: str,
    *,
    console: Console,
    poll_seconds: float = 0.5,
    timeout: float | None = DEFAULT_WAIT_SECONDS,
    stall_seconds: float = 3600.0,
    pickup_seconds: float | None = PICKUP_SECONDS,
    line_seconds: float = 10.0,
    check: Callable[[], None] | None = None,
) -> ExportState:
    """Follow ``export_id`` in the tracking table until it finishes; return its state.

    On a terminal it draws a live progress bar; otherwise (piped, redirected) it prints
    the progress as whole lines when it changes, and at least every ``line_seconds``.

    Args:
        stack: where to read the tracking table.
        export_id: the export.
        console: where the progress goes.
        poll_seconds: how often to read the table.
        timeout: give up after this many seconds (``None``: never).
        stall_seconds: idle time after which the bar says "stalled".
        pickup_seconds: if the export is still not taken by an orchestrator after this
            many seconds while its request sits on SQS 1, say so and what to run (once).
        line_seconds: the longest gap between two lines when not on a terminal.
        check: called on every poll; raise :class:`CliError` from it to stop waiting
            (the demo checks its service processes are still alive).

    Raises:
        WaitTimeout: the wait timed out (exit 1).
        CliError: the wait was interrupted (exit 130), or ``check`` raised.
    """
    tracker = stack.tracker()
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    display = _Display(console, export_id, line_seconds=line_seconds)
    noticed = pickup_seconds is None
    try:
        with display.progress:
            while True:
                state = tracker.get(export_id, submitted=True)
                now = time.time()
                display.update(state, _describe(state, now, stall_seconds), now)
                if state is not None and state.finished:
                    return state
                waited = time.monotonic() - started
                if not noticed and pickup_seconds is not None and waited >= pickup_seconds:
                    noticed = True
                    if state is None or state.status == SUBMITTED:
                        text = _nobody_picked_up(stack, export_id, waited)
                        if text is not None:
                            display.notice(text)
                if check is not None:
                    check()
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(
                        f"export {export_id} did not finish within {timeout:.0f} s "
                        f"(it continues; check it with `exportpipe status {export_id}`)",
                        exit_code=EXIT_FAILED,
                    )
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; export {export_id} continues "
            f"(check it with `exportpipe status {export_id}`)",
            exit_code=130,
        ) from None
