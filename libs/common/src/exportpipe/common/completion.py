"""Completing an export: one manifest, one ``ExportCompleted`` event, exactly once.

Both services call :meth:`ExportCompleter.complete_if_done` after they move an export's
counters (the orchestrator after its last page, the worker after each file outcome).
Whoever wins the conditional claim in the tracking table writes
``{prefix}_manifest.json`` (``prefix`` is the export's destination, e.g.
``exports/<export_id>/``) and publishes the event; everyone else returns at once.
The manifest is streamed to S3 in parts, so its size is not bounded by memory.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from exportpipe.common.observability import Metrics
from exportpipe.common.retry import aws_client, call_aws
from exportpipe.common.schemas import ExportCompleted, encode
from exportpipe.common.settings import CommonSettings
from exportpipe.common.tracking import ExportState, ExportTracker

__all__ = ["EventPublisher", "ExportCompleter", "S3StreamWriter", "Tracking", "build_tracking"]

_PART = 8 * 1024 * 1024


class EventPublisher:
    """Publishes ``ExportCompleted`` to an SNS topic or an EventBridge bus (or nowhere)."""

    def __init__(
        self,
        *,
        sns: Any = None,
        topic_arn: str | None = None,
        events: Any = None,
        bus_name: str | None = None,
    ) -> None:
        self._sns, self._topic = sns, topic_arn
        self._events, self._bus = events, bus_name

    def publish(self, event: ExportCompleted) -> None:
        """Publish ``event`` to whichever target is configured."""
        body = encode(event)
        if self._topic and self._sns is not None:
            call_aws(
                self._sns.publish,
                TopicArn=self._topic,
                Message=body,
                MessageAttributes={
                    "schema": {"DataType": "String", "StringValue": event.SCHEMA},
                    "status": {"DataType": "String", "StringValue": event.status},
                },
            )
        if self._bus and self._events is not None:
            response = call_aws(
                self._events.put_events,
                Entries=[
                    {
                        "Source": "exportpipe",
                        "DetailType": "ExportCompleted",
                        "Detail": body,
                        "EventBusName": self._bus,
                    }
                ],
            )
            if response.get("FailedEntryCount"):
                raise RuntimeError(f"EventBridge refused the event: {response['Entries']}")


class S3StreamWriter:
    """Writes one S3 object from a stream of byte strings, in 8 MiB multipart parts.

    Small objects (one part) go out as a single PutObject. On any failure the multipart
    upload is aborted, so no partial object is ever visible.
    """

    def __init__(self, s3: Any, bucket: str, key: str, *, content_type: str) -> None:
        self._s3, self._bucket, self._key, self._ctype = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        """Append ``data``; uploads a part whenever 8 MiB are buffered."""
        self._buffer += data
        if len(self._buffer) >= _PART:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = call_aws(
                self._s3.create_multipart_upload,
                Bucket=self._bucket,
                Key=self._key,
                ContentType=self._ctype,
            )["UploadId"]
        number = len(self._parts) + 1
        etag = call_aws(
            self._s3.upload_part,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=bytes(self._buffer),
        )["ETag"]
        self._parts.append({"PartNumber": number, "ETag": etag})
        self._buffer.clear()

    def close(self) -> None:
        """Finish the object."""
        if self._upload_id is None:
            call_aws(
                self._s3.put_object,
                Bucket=self._bucket,
                Key=self._key,
                Body=bytes(self._buffer),
                ContentType=self._ctype,
            )
            return
        if self._buffer:
            self._flush_part()
        call_aws(
            self._s3.complete_multipart_upload,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Abandon the object (aborting the multipart upload, if any)."""
        if self._upload_id is not None:
            call_aws(
                self._s3.abort_multipart_upload,
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
            )
            self._upload_id = None


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
        if state is None or state.finished or not state.listing_complete:
            return None
        if state.files_outstanding != 0:
            return None
        if not self._tracker.try_claim_completion(export_id, self._owner):
            return None
        status: Literal["completed", "completed_with_errors"] = (
            "completed_with_errors" if state.files_rejected else "completed"
        )
        manifest_key = f"{state.prefix}_manifest.json"
        self._write_manifest(state, status, manifest_key)
        event = ExportCompleted(
            export_id=export_id,
            tenant=state.tenant,
            status=status,
            files_expected=state.files_expected,
            files_done=state.files_done,
            files_rejected=state.files_rejected,
            bytes=state.bytes,
            manifest=f"s3://{state.bucket}/{manifest_key}",
        )
        self._publisher.publish(event)
        self._tracker.mark_completed(export_id, status=status, manifest_key=manifest_key)
        if self._metrics is not None:
            self._metrics.add("ExportsCompleted", status=status)
        return event

    def _write_manifest(self, state: ExportState, status: str, key: str) -> None:
        writer = S3StreamWriter(self._s3, state.bucket, key, content_type="application/json")
        try:
            head = {
                "export_id": state.export_id,
                "tenant": state.tenant,
                "status": status,
                "files_expected": state.files_expected,
                "files_done": state.files_done,
                "files_rejected": state.files_rejected,
                "bytes": state.bytes,
            }
            writer.write(orjson.dumps(head)[:-1] + b',"files":[')
            rejected: list[dict[str, Any]] = []
            first = True
            for file_id, outcome, detail, size in self._tracker.file_outcomes(state.export_id):
                if outcome == "rejected":
                    rejected.append({"file_id": file_id, "reason": detail, "size": size})
                    continue
                body = call_aws(self._s3.get_object, Bucket=state.bucket, Key=detail)["Body"]
                entry = body.read()
                writer.write((b"" if first else b",") + entry.strip())
                first = False
            writer.write(b'],"rejected":' + orjson.dumps(rejected) + b"}")
            writer.close()
        except BaseException:
            writer.abort()
            raise


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
