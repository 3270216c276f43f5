"""``exportpipe status``: one export's progress, read from the tracking table.

Shows files expected / done / rejected / outstanding, bytes, where the output is, the
manifest once complete, the rejected files with their reasons, and whether the export
is *stalled* (no activity for ``--stall-seconds`` while files are still outstanding:
the same rule as the ``ExportsStalled`` metric).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from rich.console import Console
from rich.table import Table

from exportpipe.common.settings import CommonSettings
from exportpipe.common.sqs import queue_depth
from exportpipe.common.tracking import SUBMITTED, ExportState, ExportTracker
from exportpipe.tools.context import Stack
from exportpipe.tools.errors import CliError

__all__ = [
    "DEFAULT_STALL_SECONDS",
    "ExportStatus",
    "fetch_status",
    "human_bytes",
    "rejected_files",
    "render_status",
    "stall_seconds_of",
    "transfer_rate",
]

DEFAULT_STALL_SECONDS: float = CommonSettings.model_fields["stall_seconds"].default
"""The services' default ``EXPORTPIPE_STALL_SECONDS`` (what the ExportsStalled metric uses)."""
_REJECTED_SHOWN = 50


@dataclass(frozen=True)
class ExportStatus:
    """An export's tracking record plus what an operator wants next to it.

    Attributes:
        state: the tracking record.
        stalled: no activity for ``stall_seconds`` while work is outstanding.
        stall_seconds: the threshold used.
        now: when the status was read (epoch seconds).
        rejected: up to 50 ``(file_id, reason)`` of rejected files.
        jobs_queue: SQS 2's approximate ``visible`` / ``in_flight`` counts (all exports).
    """

    state: ExportState
    stalled: bool
    stall_seconds: float
    now: float
    rejected: list[tuple[str, str]] = field(default_factory=list)
    jobs_queue: dict[str, int] | None = None

    @property
    def output(self) -> str:
        """Where the export's files land."""
        return f"s3://{self.state.bucket}/{self.state.prefix}"

    @property
    def manifest(self) -> str | None:
        """The export manifest's S3 URL, once complete."""
        key = self.state.manifest_key
        return f"s3://{self.state.bucket}/{key}" if key else None

    @property
    def idle_seconds(self) -> float:
        """Seconds since the export's last recorded activity."""
        return max(0.0, self.now - self.state.last_activity)

    def to_json(self) -> dict[str, Any]:
        """The status as a JSON-ready dict (the ``--json`` output)."""
        s = self.state
        return {
            "export_id": s.export_id,
            "tenant": s.tenant,
            "status": s.status,
            "listing_complete": s.listing_complete,
            "pages_listed": s.pages_listed,
            "files_expected": s.files_expected,
            "files_done": s.files_done,
            "files_rejected": s.files_rejected,
            "files_outstanding": s.files_outstanding,
            "bytes": s.bytes,
            "output": self.output,
            "manifest": self.manifest,
            "failure_reason": s.failure_reason,
            "first_activity": s.first_activity,
            "last_activity": s.last_activity,
            "idle_seconds": round(self.idle_seconds, 1),
            "stalled": self.stalled,
            "stall_seconds": self.stall_seconds,
            "rejected": [{"file_id": f, "reason": r} for f, r in self.rejected],
            "jobs_queue": self.jobs_queue,
        }


def rejected_files(tracker: ExportTracker, export_id: str) -> Iterator[tuple[str, str]]:
    """``(file_id, reason)`` of each rejected file, read page by page as consumed."""
    outcomes = tracker.file_outcomes(export_id)
    return ((file_id, detail) for file_id, outcome, detail, _ in outcomes if outcome == "rejected")


def _jobs_queue(stack: Stack) -> dict[str, int] | None:
    url = stack.get("EXPORTPIPE_JOBS_QUEUE_URL")
    if url is None:
        return None
    depth = queue_depth(stack.client("sqs"), url)
    return {"visible": depth.visible, "in_flight": depth.in_flight}


def fetch_status(
    stack: Stack,
    export_id: str,
    *,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
) -> ExportStatus:
    """Read ``export_id``'s status.

    Args:
        stack: where to read it.
        export_id: the export.
        stall_seconds: idle time after which an unfinished export counts as stalled.

    Raises:
        CliError: the export is not in the tracking table.
    """
    tracker = stack.tracker()
    state = tracker.get(export_id, submitted=True)
    if state is None:
        raise CliError(
            f"unknown export {export_id!r}: not in tracking table {tracker.table} "
            "(never submitted with `exportpipe submit`, nor listed by an orchestrator)"
        )
    now = time.time()
    shown = min(state.files_rejected, _REJECTED_SHOWN)  # 0: the table is not read
    return ExportStatus(
        state=state,
        stalled=state.is_stalled(now, stall_seconds),
        stall_seconds=stall_seconds,
        now=now,
        rejected=list(islice(rejected_files(tracker, export_id), shown)),
        jobs_queue=_jobs_queue(stack),
    )


def stall_seconds_of(stack: Stack) -> float:
    """The stack's ``EXPORTPIPE_STALL_SECONDS`` (the services' default when unset).

    Raises:
        CliError: the setting is not a positive number.
    """
    return float(stack.common_setting("stall_seconds"))


def transfer_rate(state: ExportState, now: float) -> float:
    """Bytes downloaded per second, from the export's first activity to its last (or now).

    The one definition of an export's rate: the live progress line and the demo's
    summary both use it.
    """
    end = state.last_activity if state.finished else now
    return state.bytes / max(end - state.first_activity, 1e-3)


def human_bytes(n: float) -> str:
    """``n`` bytes as ``12.3 MB`` (decimal units, as S3 and CloudWatch count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _status_text(status: ExportStatus) -> str:
    s = status.state
    if s.status == SUBMITTED:
        return (
            f"[cyan]submitted, not yet listed[/cyan] ({status.idle_seconds:.0f} s ago; "
            "an orchestrator lists it once it takes the request from SQS 1)"
        )
    colour = {
        "completed": "green",
        "completed_with_errors": "yellow",
        "failed": "red",
    }.get(s.status, "cyan")
    text = f"[{colour}]{s.status}[/{colour}]"
    if status.stalled:
        text += f" [red bold]STALLED[/] (no activity for {status.idle_seconds:.0f} s)"
    return text


def render_status(status: ExportStatus, console: Console) -> None:
    """Print ``status`` as a table (and the rejected files, if any)."""
    s = status.state
    table = Table(title=f"export {s.export_id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("status", _status_text(status))
    if s.tenant:
        table.add_row("tenant", s.tenant)
    if s.status == SUBMITTED:
        table.add_row("output", status.output)
        console.print(table)
        return
    listing = "complete" if s.listing_complete else "in progress"
    table.add_row("listing", f"{listing} ({s.pages_listed} pages)")
    table.add_row("files expected", str(s.files_expected) + ("" if s.listing_complete else "+"))
    table.add_row("files done", str(s.files_done))
    table.add_row("files rejected", str(s.files_rejected))
    table.add_row("files outstanding", str(s.files_outstanding))
    table.add_row("bytes downloaded", f"{human_bytes(s.bytes)} ({s.bytes})")
    if status.jobs_queue is not None:
        q = status.jobs_queue
        table.add_row("SQS 2 (all exports)", f"{q['visible']} queued, {q['in_flight']} in flight")
    table.add_row("output", status.output)
    if status.manifest:
        table.add_row("manifest", status.manifest)
    if s.failure_reason:
        table.add_row("failure", s.failure_reason)
    table.add_row("last activity", f"{status.idle_seconds:.0f} s ago")
    console.print(table)
    if status.rejected:
        rejected = Table(title="rejected files", title_justify="left")
        rejected.add_column("file_id")
        rejected.add_column("reason")
        for file_id, reason in status.rejected:
            rejected.add_row(file_id, reason)
        console.print(rejected)
        if s.files_rejected > len(status.rejected):
            console.print(f"... and {s.files_rejected - len(status.rejected)} more")
