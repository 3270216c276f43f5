"""``exportpipe submit``: put an ``ExportRequested`` on SQS 1 and, optionally, wait.

With ``--wait`` a live progress bar follows the tracking table (files done + rejected
out of expected, bytes, rate) until the export completes or fails. The exit status then
says how it ended: 0 completed, 3 completed with rejected files, 1 failed (or the wait
timed out); see :mod:`exportpipe.tools.errors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from exportpipe.common.layout import export_root, is_under
from exportpipe.common.schemas import ExportRequested, encode
from exportpipe.common.tenancy import message_group_id
from exportpipe.common.tracking import ExportState
from exportpipe.tools.context import Stack
from exportpipe.tools.errors import (
    EXIT_COMPLETED_WITH_ERRORS,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
)
from exportpipe.tools.status import human_bytes

__all__ = ["Submitted", "WaitTimeout", "exit_code_for", "submit_export", "wait_for_export"]


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
    return Submitted(
        export_id=export_id,
        message_id=str(sent["MessageId"]),
        output=f"s3://{bucket}/{export_root(prefix_root, export_id)}",
    )


def exit_code_for(state: ExportState) -> int:
    """0 completed, 3 completed_with_errors, 1 failed."""
    if state.status == "completed":
        return EXIT_OK
    if state.status == "completed_with_errors":
        return EXIT_COMPLETED_WITH_ERRORS
    return EXIT_FAILED


def _describe(state: ExportState | None, now: float, stall_seconds: float) -> str:
    if state is None:
        return "waiting for the orchestrator"
    if state.finished:
        return state.status
    text = "copying" if state.listing_complete else f"listing (page {state.pages_listed})"
    if state.is_stalled(now, stall_seconds):
        text += f" [red]stalled {now - state.last_activity:.0f} s[/red]"
    return text


def _rate(state: ExportState, now: float) -> str:
    end = state.last_activity if state.finished else now
    seconds = max(end - state.first_activity, 1e-3)
    return f"{human_bytes(state.bytes / seconds)}/s"


def wait_for_export(
    stack: Stack,
    export_id: str,
    *,
    console: Console,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
    stall_seconds: float = 3600.0,
    check: Callable[[], None] | None = None,
) -> ExportState:
    """Follow ``export_id`` in the tracking table until it finishes; return its state.

    Args:
        stack: where to read the tracking table.
        export_id: the export.
        console: where the progress bar goes.
        poll_seconds: how often to read the table.
        timeout: give up after this many seconds (``None``: never).
        stall_seconds: idle time after which the bar says "stalled".
        check: called on every poll; raise :class:`CliError` from it to stop waiting
            (the demo checks its service processes are still alive).

    Raises:
        WaitTimeout: the wait timed out (exit 1).
        CliError: the wait was interrupted (exit 130), or ``check`` raised.
    """
    tracker = stack.tracker()
    deadline = None if timeout is None else time.monotonic() + timeout
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[export_id]}[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[rejected]} rejected · {task.fields[bytes]}"),
        TextColumn("· {task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task(
        "waiting", total=None, export_id=export_id, rejected=0, bytes="0 B", rate="-"
    )
    state: ExportState | None = None
    try:
        with progress:
            while True:
                state = tracker.get(export_id)
                now = time.time()
                if state is not None:
                    progress.update(
                        task,
                        completed=state.files_done + state.files_rejected,
                        total=state.files_expected if state.listing_complete else None,
                        rejected=state.files_rejected,
                        bytes=human_bytes(state.bytes),
                        rate=_rate(state, now),
                    )
                progress.update(task, description=_describe(state, now, stall_seconds))
                if state is not None and state.finished:
                    progress.update(task, total=state.files_expected)
                    return state
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
