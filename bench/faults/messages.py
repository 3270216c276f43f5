"""Messages the run puts on the queues itself: duplicate jobs and hostile bodies.

Duplicates are exactly the ``DownloadJob`` the orchestrator builds for a listed file
(same deterministic ``job_id``), so the worker must recognise them. Every hostile body
carries a sequence number, so each dead letter can be matched to the message that was
injected and to the reason the system must give it (:class:`Injected`).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from exportpipe.common.layout import export_root
from exportpipe.common.schemas import DownloadJob, ExportRequested, S3Destination, job_id_for

__all__ = ["Injected", "MessageFactory", "fetch_listing"]


@dataclass(frozen=True)
class Injected:
    """A hostile message the run sent, and the dead-letter reason it must end with.

    Attributes:
        queue: ``requests`` (SQS 1) or ``jobs`` (SQS 2).
        variant: which kind of bad body (see :mod:`bench.faults.schedule`).
        body: exactly what was sent.
        reason: the ``exportpipe-error-reason`` its dead letter must carry.
    """

    queue: str
    variant: str
    body: str
    reason: str


def fetch_listing(api_url: str, token: str, export_id: str) -> list[dict[str, Any]]:
    """Every entry of the export's listing, as the orchestrator sees it."""
    entries: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
        request = urllib.request.Request(
            f"{api_url}/v1/exports/{export_id}/files{query}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            page = json.load(reply)
        entries += page["files"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return entries


class MessageFactory:
    """Builds the bodies the run injects, numbering the hostile ones.

    Args:
        export_id: the export being copied.
        bucket / output_prefix: where its files land (``{prefix}{export_id}/``).
        listing: the export's listing entries (for duplicate jobs).
    """

    def __init__(
        self, export_id: str, *, bucket: str, output_prefix: str, listing: list[dict[str, Any]]
    ) -> None:
        self.export_id = export_id
        self.destination = S3Destination(
            bucket=bucket, prefix=export_root(output_prefix, export_id)
        )
        self._entries = {e["file_id"]: e for e in listing}
        self._seq = 0

    def job(self, file_id: str) -> DownloadJob:
        """The orchestrator's job for ``file_id``."""
        entry = self._entries[file_id]
        return DownloadJob(
            job_id=job_id_for(self.export_id, file_id),
            export_id=self.export_id,
            file_id=file_id,
            file_name=entry["name"],
            url=entry["url"],
            size_bytes=entry.get("size_bytes"),
            sha256=entry.get("sha256"),
            compression=entry.get("compression"),
            format=entry.get("format") or "binary",
            destination=self.destination,
        )

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _some_job(self) -> dict[str, Any]:
        first = sorted(self._entries)[0]
        return self.job(first).to_wire()

    def garbage_request(self, variant: str) -> Injected:
        """A bad ``ExportRequested`` body for SQS 1."""
        n = self._next()
        reason = "malformed_message"
        if variant == "not_json":
            body = f"garbage #{n}: {{this is not json"
        elif variant == "json_array":
            body = json.dumps([n, "an array, not an object"])
        elif variant == "bad_export_id":
            body = json.dumps(
                {"schema": ExportRequested.SCHEMA, "version": 1, "export_id": f"../../etc/{n}"}
            )
        elif variant == "download_job":
            body = json.dumps({**self._some_job(), "note": n})
            reason = "unsupported_schema_version"
        elif variant == "unknown_export":
            body = json.dumps(
                {"schema": ExportRequested.SCHEMA, "version": 1, "export_id": f"no-such-export-{n}"}
            )
            reason = "export_not_found"
        else:
            raise ValueError(f"unknown variant {variant!r}")
        return Injected("requests", variant, body, reason)

    def garbage_job(self, variant: str) -> Injected:
        """A bad ``DownloadJob`` body for SQS 2."""
        n = self._next()
        reason = "malformed_message"
        job = self._some_job()
        if variant == "not_json":
            body = f"garbage #{n}: \u00ff\u00fe<not json>"
        elif variant == "json_array":
            body = json.dumps([{"schema": DownloadJob.SCHEMA}, n])
        elif variant == "missing_fields":
            body = json.dumps({"schema": DownloadJob.SCHEMA, "version": 1, "note": n})
        elif variant == "export_requested":
            body = json.dumps(
                {"schema": ExportRequested.SCHEMA, "version": 1, "export_id": f"x{n}"}
            )
            reason = "unsupported_schema_version"
        elif variant == "job_id_mismatch":
            body = json.dumps({**job, "job_id": f"{n:032x}"})
        elif variant == "foreign_bucket":
            destination = {"bucket": "someone-elses-bucket", "prefix": job["destination"]["prefix"]}
            body = json.dumps({**job, "destination": destination, "note": n})
            reason = "destination_not_allowed"
        elif variant == "escaping_prefix":
            prefix = f"{self.destination.prefix}../../../outside-{n}/"
            destination = {"bucket": self.destination.bucket, "prefix": prefix}
            body = json.dumps({**job, "destination": destination})
            reason = "bad_destination"
        else:
            raise ValueError(f"unknown variant {variant!r}")
        return Injected("jobs", variant, body, reason)

    def wrong_version(self, queue: str, version: int) -> Injected:
        """A well-formed body of a major version this build does not read."""
        n = self._next()
        if queue == "requests":
            body = json.dumps(
                {
                    "schema": ExportRequested.SCHEMA,
                    "version": version,
                    "export_id": self.export_id,
                    "note": n,
                }
            )
        else:
            body = json.dumps({**self._some_job(), "version": version, "note": n})
        return Injected(queue, f"version_{version}", body, "unsupported_schema_version")
