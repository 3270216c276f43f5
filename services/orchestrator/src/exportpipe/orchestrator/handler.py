"""One ``ExportRequested`` message = one page of the export's listing.

For each message the handler:

1. on the first page, asks the export's status (``failed``/``expired`` -> dead letter;
   ``pending``/``running`` -> re-check later, see below);
2. fetches **one** page of files (``page_size``);
3. checks every entry against the contract and turns it into a ``DownloadJob`` with the
   deterministic ``job_id_for(export_id, file_id)``;
4. sends the jobs to SQS 2 (batches of 10, several batches at once), each in its
   tenant's message group (fair queues, ADR 0018);
5. sends the continuation ``ExportRequested`` (next cursor, ``page + 1``) to SQS 1, if
   there is a next page;
6. returns, and the queue runtime deletes the input.

A crash anywhere re-runs at most this page: jobs already sent are sent again with the
same ids, which the worker recognises. A crash in the short window after step 5 and
before the delete also leaves two continuations, so the rest of that export is listed
twice -- more duplicates, never a gap. No message is in flight longer than one page.

**Not ready yet** (status pending/running, or a 409 from the listing): the same request
goes back to SQS 1 with a delay growing ``initial, 2x, 4x ...`` up to SQS's 15 minutes,
and its ``not_ready_checks``/``first_not_ready_at`` record how long it has waited; past
``not_ready_max_wait_seconds`` it is dead-lettered as ``export_not_ready_timeout``.
Nothing sleeps in-process.

**Listing entries are not trusted.** Each entry must satisfy the contract: an id and
name the job schema accepts (ids follow the one rule of :mod:`exportpipe.common.schemas`),
an absolute ``http``/``https`` URL with a host and no user info, a 64-hex sha256 or null,
a non-negative size or null, a known compression (or null) and format. An entry that
does not is *rejected at listing time*, like a file the worker refuses: it is counted in
the page, a rejection record ``rejected/{file_id}.json`` is written (reason
``invalid_listing_entry``, naming the entry and the field) and its outcome is recorded
in tracking, so the export completes ``completed_with_errors`` and says which file and
why. The other files of the page go on: one bad entry never blocks its neighbours, and
nothing is dropped silently. An entry whose very ``file_id`` breaks the rule is
recorded under ``invalid-{sha256(file_id)[:24]}`` (the record's message quotes the
listed id, shortened). Whether a *valid* URL is safe to fetch (its addresses, redirects) is the
worker's decision at download time, reported per file.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from exportpipe.common.completion import Tracking
from exportpipe.common.errors import (
    ExportPipeError,
    MalformedMessage,
    MessageError,
    PermanentError,
    UpstreamRejected,
)
from exportpipe.common.layout import (
    ExportKeys,
    FileRejection,
    SourceRef,
    export_root,
    is_under,
)
from exportpipe.common.observability import Metrics, redact_text, redact_url
from exportpipe.common.producer import BatchProducer
from exportpipe.common.retry import call_aws
from exportpipe.common.schemas import (
    DownloadJob,
    ExportRequested,
    S3Destination,
    decode,
    encode,
    is_valid_id,
    job_id_for,
    validation_problems,
)
from exportpipe.common.sqs import JobContext
from exportpipe.common.tenancy import message_group_id
from exportpipe.orchestrator.settings import OrchestratorSettings
from exportpipe.orchestrator.source import (
    GONE,
    NOT_READY,
    ExportNotReady,
    ExportSource,
    FilePage,
    ListedFile,
)

__all__ = ["PAGE_ETA_SECONDS", "PageHandler", "not_ready_delay"]

T = TypeVar("T")

PAGE_ETA_SECONDS = 15.0
"""What the runtime assumes a page still needs at shutdown: short enough that a stopping
task finishes its pages (within the grace period) instead of releasing them to be
re-run by another task."""


def not_ready_delay(checks: int, *, initial: int, maximum: int) -> int:
    """SQS delay before re-check number ``checks + 1``: ``initial * 2**checks``, capped."""
    if initial <= 0:
        return 0
    return min(maximum, initial << min(checks, 30))


@dataclass(frozen=True)
class RefusedEntry:
    """A listing entry rejected at listing time.

    Attributes:
        file_id: the id it is recorded under: the listed id, or a digest of it when the
            listed id itself breaks the id rule.
        entry: the entry as listed.
        error: why (reason ``invalid_listing_entry``).
    """

    file_id: str
    entry: ListedFile
    error: UpstreamRejected


def _record_id(listed: str) -> str:
    if is_valid_id(listed):
        return listed
    digest = hashlib.sha256(listed.encode("utf-8", "surrogateescape")).hexdigest()
    return f"invalid-{digest[:24]}"


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http or https"
    if not host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "carries user info"
    return None


class PageHandler:
    """Handles one ``ExportRequested``: fetches one page and fans it out as jobs.

    Args:
        settings: the orchestrator's settings.
        source: the vendor's Export API.
        sqs: a boto3 SQS client (for continuations).
        jobs: the producer sending ``DownloadJob`` bodies to SQS 2.
        logger / metrics: observability.
        s3: a boto3 S3 client (rejection records of entries refused at listing time).
        tracking: export tracking, when configured: each page's file count is recorded
            *before* its jobs are sent (so outstanding never goes below zero), an
            export-level permanent failure marks the export failed, and the last page
            completes the export if every file is already done.
        clock: current UTC time (tests move it).
    """

    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        source: ExportSource,
        sqs: Any,
        jobs: BatchProducer,
        logger: Logger,
        metrics: Metrics,
        s3: Any,
        tracking: Tracking | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._s3 = s3
        self._source = source
        self._sqs = sqs
        self._jobs = jobs
        self._log = logger
        self._metrics = metrics
        self._tracking = tracking
        self._clock = clock

    def __call__(self, ctx: JobContext) -> None:
        """Handle one message (the queue runtime's handler)."""
        ctx.set_eta(PAGE_ETA_SECONDS)
        try:
            self._handle(ctx)
        except ExportPipeError as exc:
            self._metrics.add("Failures", reason=exc.reason)
            # An export-level permanent failure marks the export failed; a bad message
            # names no export to mark.
            permanent = isinstance(exc, PermanentError) and not isinstance(exc, MessageError)
            if permanent and self._tracking is not None:
                request = decode(ctx.body, ExportRequested)
                self._tracking.tracker.mark_failed(
                    request.export_id,
                    f"{exc.reason}: {redact_text(exc.message)}",
                    bucket=self._settings.bucket,
                    prefix=self._destination(request).prefix,
                    tenant=request.tenant,
                )
            raise

    # ---------------------------------------------------------------- steps

    def _handle(self, ctx: JobContext) -> None:
        request = decode(ctx.body, ExportRequested)
        ctx.log_keys.update(export_id=request.export_id, page=str(request.page))
        export_id = request.export_id

        if request.cursor is None and request.page == 0:
            info = self._api("get_export", self._source.get_export, export_id)
            if info.status in GONE:
                raise UpstreamRejected(
                    f"export {export_id} is {info.status}", reason=f"export_{info.status}"
                )
            if info.status in NOT_READY:
                self._recheck_later(request, info.status)
                return
            if request.not_ready_checks == 0:
                self._log.info(
                    "export ready",
                    extra={"export_id": export_id, "file_count": info.file_count},
                )

        ctx.check()
        try:
            page = self._api(
                "list_files",
                lambda: self._source.list_files(
                    export_id, cursor=request.cursor, limit=self._settings.page_size
                ),
            )
        except ExportNotReady as exc:
            # 409: ask the status to tell "not yet" from "never" (failed/expired).
            info = self._api("get_export", self._source.get_export, export_id)
            if info.status in GONE:
                raise UpstreamRejected(
                    f"export {export_id} is {info.status}", reason=f"export_{info.status}"
                ) from None
            self._recheck_later(request, exc.status or info.status)
            return
        self._metrics.add("PagesFetched")

        jobs, refused = self._build_jobs(request, page)
        if page.next_cursor is not None and page.next_cursor == request.cursor:
            raise UpstreamRejected(
                f"export {export_id} page {request.page}: next_cursor repeats the current "
                "cursor; following it would loop forever",
                reason="malformed_listing",
            )
        ctx.check()
        if self._tracking is not None:
            self._tracking.tracker.record_page(
                export_id,
                request.page,
                [job.file_id for job in jobs] + [r.file_id for r in refused],
                is_last=page.next_cursor is None,
                bucket=self._settings.bucket,
                prefix=self._destination(request).prefix,
                tenant=request.tenant,
            )
        for refusal in refused:
            self._refuse(request, refusal)
        started = time.monotonic()
        sent = self._jobs.send(jobs) if jobs else 0
        self._metrics.add("JobsEmitted", sent)
        # From here on, finish: being released now would only re-send this page.
        total = request.jobs_emitted + sent
        if page.next_cursor is not None:
            following = request.model_copy(
                update={
                    "cursor": page.next_cursor,
                    "page": request.page + 1,
                    "jobs_emitted": total,
                    "not_ready_checks": 0,
                    "first_not_ready_at": None,
                }
            )
            self._send_request(following, delay=0)
        else:
            self._metrics.add("ExportsListed")
            if self._tracking is not None:
                # Every file may already be done (or there were none): complete now.
                self._tracking.completer.complete_if_done(export_id)
        self._log.info(
            "page done",
            extra={
                "export_id": export_id,
                "page": request.page,
                "files": len(page.files),
                "entries_rejected": len(refused),
                "jobs_sent": sent,
                "jobs_total": total,
                "last_page": page.next_cursor is None,
                "send_seconds": round(time.monotonic() - started, 3),
            },
        )

    def _destination(self, request: ExportRequested) -> S3Destination:
        prefix = request.destination_prefix or self._settings.output_prefix
        if not is_under(prefix, self._settings.output_prefix):
            # Workers may only write under the output prefix (their IAM grant).
            raise MalformedMessage(
                f"destination_prefix {prefix!r} is outside EXPORTPIPE_OUTPUT_PREFIX "
                f"{self._settings.output_prefix!r}",
                reason="destination_not_allowed",
            )
        return S3Destination(
            bucket=self._settings.bucket, prefix=export_root(prefix, request.export_id)
        )

    def _build_jobs(
        self, request: ExportRequested, page: FilePage
    ) -> tuple[list[DownloadJob], list[RefusedEntry]]:
        """The page's jobs and its refused entries, one per distinct file id."""
        destination = self._destination(request)
        outcomes: dict[str, DownloadJob | RefusedEntry] = {}
        for index, entry in enumerate(page.files):
            outcome: DownloadJob | RefusedEntry
            try:
                outcome = self._job(request, index, entry, destination)
            except UpstreamRejected as exc:
                outcome = RefusedEntry(_record_id(entry.file_id), entry, exc)
            earlier = outcomes.get(outcome.file_id)
            if earlier is not None:
                # Same file listed twice: one outcome is enough (a re-run dedupes anyway);
                # a valid listing of it wins over an invalid one.
                self._metrics.add("DuplicateEntries")
                if isinstance(earlier, DownloadJob) or isinstance(outcome, RefusedEntry):
                    continue
            outcomes[outcome.file_id] = outcome
        jobs = [o for o in outcomes.values() if isinstance(o, DownloadJob)]
        refused = [o for o in outcomes.values() if isinstance(o, RefusedEntry)]
        return jobs, refused

    def _refuse(self, request: ExportRequested, refusal: RefusedEntry) -> None:
        """Write the entry's rejection record and count its outcome (before any job)."""
        destination = self._destination(request)
        entry, error = refusal.entry, refusal.error
        message = redact_text(error.message)
        if refusal.file_id != entry.file_id:
            message += f" (listed file_id {str(entry.file_id)[:120]!r})"
        record = FileRejection(
            job_id=job_id_for(request.export_id, refusal.file_id),
            export_id=request.export_id,
            file_id=refusal.file_id,
            file_name=str(entry.name)[:1024],
            source=SourceRef(url=redact_url(str(entry.url))),
            error=type(error).__name__,
            reason=error.reason,
            message=message,
            rejected_at=self._clock(),
        )
        call_aws(
            self._s3.put_object,
            Bucket=destination.bucket,
            Key=ExportKeys.at(destination.prefix).file(refusal.file_id).rejected,
            Body=record.to_json(),
            ContentType="application/json",
        )
        self._metrics.add("EntriesRejected", reason=error.reason)
        self._log.warning(
            "listing entry rejected",
            extra={
                "export_id": request.export_id,
                "file_id": refusal.file_id,
                "reason": error.reason,
                "error": message[:300],
            },
        )
        if self._tracking is not None:
            self._tracking.tracker.record_file(
                request.export_id,
                refusal.file_id,
                "rejected",
                detail=f"{error.reason}: {message}",
                bucket=destination.bucket,
                prefix=destination.prefix,
                tenant=request.tenant,
            )

    def _job(
        self, request: ExportRequested, index: int, entry: ListedFile, destination: S3Destination
    ) -> DownloadJob:
        where = (
            f"export {request.export_id} page {request.page} files[{index}] "
            f"(file_id {str(entry.file_id)[:80]!r})"
        )
        if entry.problem is not None:
            raise UpstreamRejected(f"{where}: {entry.problem}", reason="invalid_listing_entry")
        problem = _url_problem(entry.url)
        if problem is not None:
            raise UpstreamRejected(f"{where}: url {problem}", reason="invalid_listing_entry")
        try:
            return DownloadJob(
                job_id=job_id_for(request.export_id, entry.file_id),
                export_id=request.export_id,
                file_id=entry.file_id,
                file_name=entry.name,
                url=entry.url,
                size_bytes=entry.size_bytes,
                sha256=entry.sha256,
                compression=entry.compression,  # type: ignore[arg-type]  # validated here
                format=entry.format,  # type: ignore[arg-type]
                destination=destination,
                tenant=request.tenant,
            )
        except ValidationError as exc:
            fields = validation_problems(exc, whole="entry")
            raise UpstreamRejected(f"{where}: {fields}", reason="invalid_listing_entry") from None

    def _recheck_later(self, request: ExportRequested, status: str | None) -> None:
        settings = self._settings
        now = self._clock()
        first = request.first_not_ready_at or now
        waited = max(0.0, (now - first).total_seconds())
        if waited >= settings.not_ready_max_wait_seconds:
            raise UpstreamRejected(
                f"export {request.export_id} still {status or 'not ready'} after "
                f"{waited / 3600:.1f} h (limit {settings.not_ready_max_wait_seconds / 3600:.1f} h"
                ", EXPORTPIPE_NOT_READY_MAX_WAIT_SECONDS)",
                reason="export_not_ready_timeout",
            )
        delay = not_ready_delay(
            request.not_ready_checks,
            initial=settings.not_ready_initial_delay_seconds,
            maximum=settings.not_ready_max_delay_seconds,
        )
        delay = min(delay, math.ceil(settings.not_ready_max_wait_seconds - waited))
        again = request.model_copy(
            update={"not_ready_checks": request.not_ready_checks + 1, "first_not_ready_at": first}
        )
        self._send_request(again, delay=delay)
        self._metrics.add("NotReadyRechecks")
        self._log.info(
            "export not ready, re-checking later",
            extra={
                "export_id": request.export_id,
                "status": status,
                "check": again.not_ready_checks,
                "delay_seconds": delay,
                "waited_seconds": round(waited),
            },
        )

    # -------------------------------------------------------------- helpers

    def _send_request(self, request: ExportRequested, *, delay: int) -> None:
        call_aws(
            self._sqs.send_message,
            QueueUrl=self._settings.requests_queue_url,
            MessageBody=encode(request),
            # Continuations stay in the tenant's group: SQS 1 is a fair queue too.
            MessageGroupId=message_group_id(request),
            DelaySeconds=max(0, min(900, delay)),
        )

    def _api(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.monotonic()
        outcome = "error"
        try:
            result = fn(*args)
            outcome = "ok"
            return result
        except ExportNotReady:
            outcome = "not_ready"
            raise
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            self._metrics.add("ApiLatency", elapsed_ms, "Milliseconds", operation=op)
            self._metrics.add("ApiCalls", operation=op, outcome=outcome)
