"""Completing an export: one manifest, one ``ExportCompleted`` event, exactly once.

Both services call :meth:`ExportCompleter.complete_if_done` after they move an export's
counters (the orchestrator after its last page, the worker after each file outcome).
Whoever wins the conditional claim in the tracking table writes the export manifest
(:class:`~exportpipe.common.layout.ExportManifest`) and publishes the event; everyone
else returns at once. The manifest is streamed to S3 through s3transfer, so its size is
not bounded by memory, and a failed upload leaves no partial object.
"""

from __future__ import annotations

import io
import socket
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from boto3.s3.transfer import TransferConfig

from exportpipe.common.events import EventPublisher
from exportpipe.common.layout import ExportKeys, ExportManifest, RejectedFile
from exportpipe.common.observability import Metrics
from exportpipe.common.retry import aws_client, call_aws
from exportpipe.common.schemas import ExportCompleted
from exportpipe.common.settings import CommonSettings
from exportpipe.common.tracking import ExportState, ExportTracker

__all__ = ["EventPublisher", "ExportCompleter", "Tracking", "build_tracking"]

# Parts of 8 MiB, two in flight: at most ~24 MiB buffered (the orchestrator's budget).
_TRANSFER = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=2)
_READS_IN_FLIGHT = 16


class _ChunkStream(io.RawIOBase):
    """A readable file over an iterator of byte strings (what s3transfer uploads)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._pending))
        view[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class ExportCompleter:
    """Writes the export manifest and publishes the completion event, exactly once."""

    def __init__(
        self,
        tracker: ExportTracker,
        s3: Any,
        publisher: EventPublisher,
        *,
        metrics: Metrics | None = None,
        owner: str | None = None,
    ) -> None:
        self._tracker = tracker
        self._s3 = s3
        self._publisher = publisher
        self._metrics = metrics
        self._owner = owner or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"

    def complete_if_done(self, export_id: str) -> ExportCompleted | None:
        """Complete the export if every listed file is done or rejected and we win.

        Returns:
            The published event, or ``None`` if the export is not complete yet or
            another process completes it.
        """
        state = self._tracker.get(export_id)
        if state is None or state.finished or not state.listing_complete or state.files_outstanding:
            return None
        if not self._tracker.try_claim_completion(export_id, self._owner):
            return None
        status: Literal["completed", "completed_with_errors"] = (
            "completed_with_errors" if state.files_rejected else "completed"
        )
        manifest_key = ExportKeys.at(state.prefix).manifest
        head = ExportManifest(
            export_id=state.export_id,
            tenant=state.tenant,
            status=status,
            files_expected=state.files_expected,
            files_done=state.files_done,
            files_rejected=state.files_rejected,
            bytes=state.bytes,
        )
        self._write_manifest(state, head, manifest_key)
        # The event repeats the manifest's head: the counts a subscriber acts on.
        event = ExportCompleted(
            **head.model_dump(exclude={"schema_name", "version", "files", "rejected"}),
            manifest=f"s3://{state.bucket}/{manifest_key}",
        )
        self._publisher.publish(event)
        self._tracker.mark_completed(export_id, status=status, manifest_key=manifest_key)
        if self._metrics is not None:
            self._metrics.add("ExportsCompleted", status=status)
        return event

    def _write_manifest(self, state: ExportState, head: ExportManifest, key: str) -> None:
        # A retry starts a fresh stream: the chunks are read again from the start.
        call_aws(
            lambda: self._s3.upload_fileobj(
                _ChunkStream(self._manifest_chunks(state, head)),
                state.bucket,
                key,
                ExtraArgs={"ContentType": "application/json"},
                Config=_TRANSFER,
            )
        )

    def _manifest_chunks(self, state: ExportState, head: ExportManifest) -> Iterator[bytes]:
        """The manifest's JSON: the head, each stored file manifest, the refused files.

        File manifests are read :data:`_READS_IN_FLIGHT` at a time, in listing order: one
        after another, a million-file export would spend hours on round trips here.
        """
        yield head.head_json()
        rejected: list[RejectedFile] = []
        window: deque[Future[bytes]] = deque()
        first = True
        with ThreadPoolExecutor(_READS_IN_FLIGHT, thread_name_prefix="manifest") as pool:
            for file_id, outcome, detail, size in self._tracker.file_outcomes(state.export_id):
                if outcome == "rejected":
                    rejected.append(RejectedFile(file_id=file_id, reason=detail, size=size))
                    continue
                window.append(pool.submit(self._read_file_manifest, state.bucket, detail))
                while len(window) >= _READS_IN_FLIGHT or (window and window[0].done()):
                    yield (b"" if first else b",") + window.popleft().result()
                    first = False
            while window:
                yield (b"" if first else b",") + window.popleft().result()
                first = False
        yield b'],"rejected":[' + b",".join(r.model_dump_json().encode() for r in rejected) + b"]}"

    def _read_file_manifest(self, bucket: str, key: str) -> bytes:
        body = call_aws(self._s3.get_object, Bucket=bucket, Key=key)["Body"]
        return bytes(body.read().strip())


@dataclass(frozen=True)
class Tracking:
    """The tracker and the completer a service uses, built from its settings."""

    tracker: ExportTracker
    completer: ExportCompleter


def build_tracking(settings: CommonSettings, *, s3: Any, metrics: Metrics) -> Tracking | None:
    """Tracking for a service, or ``None`` when ``EXPORTPIPE_TABLE`` is not set."""
    if not settings.table:
        return None
    tracker = ExportTracker(aws_client("dynamodb"), settings.table)
    publisher = EventPublisher(
        sns=aws_client("sns") if settings.events_topic_arn else None,
        topic_arn=settings.events_topic_arn,
        events=aws_client("events") if settings.events_bus_name else None,
        bus_name=settings.events_bus_name,
    )
    return Tracking(tracker, ExportCompleter(tracker, s3, publisher, metrics=metrics))
