"""Export progress tracking in DynamoDB: idempotent counts and a single completion.

One table, items keyed by ``pk = "EXPORT#<export_id>"`` and ``sk``:

``META``
    the export: status, bucket/prefix, pages listed, files expected / done /
    rejected / outstanding, bytes, first and last activity, ``listing_complete``,
    the completion claim, ``expires_at`` (TTL). While an export is active it also
    carries ``active = "1"``, which puts it on the sparse ``active`` index (sort key
    ``last_activity``) that stalled-export detection queries.
``PAGE#<n>``
    written once per listed page; the transaction that writes it adds the page's file
    count, so a re-run page never counts twice.
``LISTED#<file_id>``
    written once for every file of a page (a conditional put: never over an existing
    item), before the page is counted: the proof that the export listed the file, and
    the place its outcome is recorded. An outcome for a file the export never listed
    (a job addressed to the wrong export, a forged message) is ignored, so no count can
    go negative and no export completes early. A file's outcome (done or rejected) is
    written onto its ``LISTED#`` item once (``attribute_not_exists(outcome)``); the
    same transaction moves the counters, so a redelivered job never counts twice
    (ADR 0015).
``FILE#<file_id>``
    the outcome of a file whose ``LISTED#`` item was written by an older release
    (without ``counts_outcome``) or of an export whose pages were counted without ids
    (``listed_by_id`` absent on META): written once, beside a check of the
    ``LISTED#`` item where there is one, in the transaction that moves the counters.
``REQUEST``
    written by ``exportpipe submit`` when it sends the ``ExportRequested``: the export
    is known (``submitted``) before an orchestrator lists it. Nothing else reads or
    changes it; the META item alone drives progress and completion.

Completion: ``files_outstanding`` = expected - done - rejected is maintained by the same
transactions. Whoever observes ``listing_complete`` and ``files_outstanding == 0`` tries
a conditional claim; exactly one process wins and writes the manifest and the event.

A file's outcome is one write and no read (:meth:`ExportTracker.count_file`): one
transaction of two items (its ``LISTED#`` item and META), which only succeeds while
the file is *not* the export's last outstanding one, so a success needs no look at the
counts. The last file's transaction is refused on that
condition, and only then is it written again without it and the export read to
complete it (ADR 0015).
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from exportpipe.common.errors import AwsTransientError
from exportpipe.common.retry import call_aws, call_aws_pages

__all__ = [
    "ACTIVE_INDEX",
    "SUBMITTED",
    "ExportState",
    "ExportTracker",
    "FileCount",
    "FileOutcome",
]

ACTIVE_INDEX = "active"
FileOutcome = Literal["done", "rejected"]
FileCount = Literal["counted", "last", "already_counted", "not_listed"]
"""What :meth:`ExportTracker.count_file` did: counted the file; counted it and it was the
export's last outstanding file (listing complete); found it counted before; or ignored
it, because the export never listed it."""
SUBMITTED = "submitted"
"""Status of an export submitted but not listed by an orchestrator yet."""
_TTL_SECONDS = 90 * 24 * 3600
_MARKERS_IN_FLIGHT = 4  # conditional LISTED# puts of one page at once (x the
# orchestrator's concurrent pages: within the client's 20 pooled connections)


def _names(values: dict[str, Any]) -> dict[str, str]:
    """Placeholders for the META attributes whose names DynamoDB reserves."""
    names = {"#st": "status", "#bucket": "bucket", "#prefix": "prefix"}
    if ":t" in values:
        names["#tenant"] = "tenant"
    return names


class _NotListed(Exception):
    """A file outcome's ``LISTED#`` condition check failed."""


def _pk(export_id: str) -> dict[str, str]:
    return {"S": f"EXPORT#{export_id}"}


def _verdict(item: dict[str, Any] | None) -> str:
    """A ``LISTED#`` item's state: ``"absent"``, ``"legacy"`` or ``"counted"``, or
    ``"open"`` (listed, no outcome yet)."""
    if not item:
        return "absent"
    if not item.get("counts_outcome", {}).get("BOOL", False):
        return "legacy"
    return "counted" if "outcome" in item else "open"


@dataclass(frozen=True)
class ExportState:
    """A snapshot of one export's tracking record."""

    export_id: str
    status: str
    tenant: str | None
    bucket: str
    prefix: str
    pages_listed: int
    listing_complete: bool
    files_expected: int
    files_done: int
    files_rejected: int
    files_outstanding: int
    bytes: int
    first_activity: float
    last_activity: float
    manifest_key: str | None
    failure_reason: str | None
    listed_by_id: bool = False

    @property
    def finished(self) -> bool:
        """True once the export completed (with or without errors) or failed."""
        return self.status in {"completed", "completed_with_errors", "failed"}

    def is_stalled(self, now: float, stall_seconds: float) -> bool:
        """No activity for ``stall_seconds`` while work is still outstanding."""
        return not self.finished and now - self.last_activity > stall_seconds

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ExportState:
        """Build from a raw DynamoDB item."""

        def n(key: str) -> int:
            return int(item.get(key, {}).get("N", "0"))

        def s(key: str) -> str | None:
            value = item.get(key, {}).get("S")
            return str(value) if value is not None else None

        return cls(
            export_id=str(item["pk"]["S"]).removeprefix("EXPORT#"),
            status=s("status") or "listing",
            tenant=s("tenant"),
            bucket=s("bucket") or "",
            prefix=s("prefix") or "",
            pages_listed=n("pages_listed"),
            listing_complete=bool(item.get("listing_complete", {}).get("BOOL", False)),
            files_expected=n("files_expected"),
            files_done=n("files_done"),
            files_rejected=n("files_rejected"),
            files_outstanding=n("files_outstanding"),
            bytes=n("bytes"),
            first_activity=float(item.get("first_activity", {}).get("N", "0")),
            last_activity=float(item.get("last_activity", {}).get("N", "0")),
            manifest_key=s("manifest_key"),
            failure_reason=s("failure_reason"),
            listed_by_id=bool(item.get("listed_by_id", {}).get("BOOL", False)),
        )


class ExportTracker:
    """Reads and writes the tracking table (``EXPORTPIPE_TABLE``)."""

    def __init__(self, dynamodb: Any, table: str, *, ttl_seconds: int = _TTL_SECONDS) -> None:
        self._db = dynamodb
        self._table = table
        self._ttl = ttl_seconds

    @property
    def table(self) -> str:
        """The table name."""
        return self._table

    def _meta_update(
        self, export_id: str, *, bucket: str, prefix: str, tenant: str | None
    ) -> tuple[str, dict[str, Any]]:
        now = time.time()
        expr = (
            "SET #st = if_not_exists(#st, :listing), #bucket = if_not_exists(#bucket, :b), "
            "#prefix = if_not_exists(#prefix, :p), first_activity = if_not_exists("
            "first_activity, :now), last_activity = :now, expires_at = :ttl, "
            "active = if_not_exists(active, :one)"
        )
        values: dict[str, Any] = {
            ":listing": {"S": "listing"},
            ":b": {"S": bucket},
            ":p": {"S": prefix},
            ":now": {"N": f"{now:.3f}"},
            ":ttl": {"N": str(int(now) + self._ttl)},
            ":one": {"S": "1"},
        }
        if tenant:
            expr += ", #tenant = if_not_exists(#tenant, :t)"
            values[":t"] = {"S": tenant}
        return expr, values

    def _outcome_update(
        self,
        export_id: str,
        outcome: FileOutcome,
        *,
        size: int,
        bucket: str,
        prefix: str,
        tenant: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """META's update for one file outcome: its counter, outstanding and bytes."""
        expr, values = self._meta_update(export_id, bucket=bucket, prefix=prefix, tenant=tenant)
        counter = "files_done" if outcome == "done" else "files_rejected"
        expr += f" ADD {counter} :one_n, files_outstanding :minus, #bytes :size"
        values.update({":one_n": {"N": "1"}, ":minus": {"N": "-1"}, ":size": {"N": str(size)}})
        return expr, values

    def record_page(
        self,
        export_id: str,
        page: int,
        files: Collection[str] | int,
        *,
        is_last: bool,
        bucket: str,
        prefix: str,
        tenant: str | None = None,
    ) -> bool:
        """Count a listed page once; ``False`` if already counted.

        Call *before* the page's jobs are sent, so that outstanding never goes negative.

        Args:
            files: the page's distinct file ids (each gets its ``LISTED#`` marker first,
                so outcomes for unlisted files are ignored); a bare count records the
                page without markers and without that check (older callers).
        """
        if not isinstance(files, int):
            self._mark_listed(export_id, files)
        expr, values = self._meta_update(export_id, bucket=bucket, prefix=prefix, tenant=tenant)
        # A newly listed page (re)opens the export: after a failure and a redrive of the
        # page that failed, it is listing again.
        expr = expr.replace("#st = if_not_exists(#st, :listing)", "#st = :listing")
        expr = expr.replace("active = if_not_exists(active, :one)", "active = :one")
        expr += " REMOVE failure_reason"
        expr += " ADD pages_listed :one_n, files_expected :f, files_outstanding :f"
        count = files if isinstance(files, int) else len(files)
        values[":one_n"] = {"N": "1"}
        values[":f"] = {"N": str(count)}
        if not isinstance(files, int):
            expr = expr.replace("SET ", "SET listed_by_id = :true, ", 1)
            values[":true"] = {"BOOL": True}
        if is_last:
            expr = expr.replace("SET ", "SET listing_complete = :true, ", 1)
            values[":true"] = {"BOOL": True}
        codes = self._record_codes(
            export_id,
            f"PAGE#{page:09d}",
            item={"files": {"N": str(count)}},
            expr=expr,
            values=values,
        )
        return codes is None  # False: the page was counted before

    def _mark_listed(self, export_id: str, file_ids: Collection[str]) -> None:
        """Write each file id's ``LISTED#`` item unless it exists.

        Conditional puts, one per file (one write unit each, like a batch put): a
        re-run page, or a second listing of the export running at the same time, must
        never replace an item that already carries the file's outcome -- the outcome
        would be counted again. ``BatchWriteItem`` cannot be conditional.
        """
        expires = {"N": str(int(time.time()) + self._ttl)}

        def mark(file_id: str) -> None:
            try:
                call_aws(
                    self._db.put_item,
                    TableName=self._table,
                    Item={
                        "pk": _pk(export_id),
                        "sk": {"S": f"LISTED#{file_id}"},
                        "counts_outcome": {"BOOL": True},
                        "expires_at": expires,
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                # Listed before (a re-run page): the item, and any outcome on it, stay.

        ids = list(dict.fromkeys(file_ids))
        if len(ids) <= 1:
            for file_id in ids:
                mark(file_id)
            return
        with ThreadPoolExecutor(min(_MARKERS_IN_FLIGHT, len(ids))) as pool:
            # list(): re-raise the first failure; the page is then not counted.
            list(pool.map(mark, ids))

    def record_file(
        self,
        export_id: str,
        file_id: str,
        outcome: FileOutcome,
        *,
        size: int = 0,
        detail: str = "",
        bucket: str,
        prefix: str,
        tenant: str | None = None,
    ) -> bool:
        """Count one file's outcome once; ``False`` if it was already counted.

        ``False`` too, counting nothing, when the export never listed ``file_id`` (see
        ``LISTED#`` in the module docstring) or is unknown.

        ``detail`` is the manifest key for ``done`` or the reason for ``rejected``.
        """
        counted = self.count_file(
            export_id,
            file_id,
            outcome,
            size=size,
            detail=detail,
            bucket=bucket,
            prefix=prefix,
            tenant=tenant,
        )
        return counted in ("counted", "last")

    def count_file(
        self,
        export_id: str,
        file_id: str,
        outcome: FileOutcome,
        *,
        size: int = 0,
        detail: str = "",
        bucket: str,
        prefix: str,
        tenant: str | None = None,
    ) -> FileCount:
        """Count one file's outcome once, in one transaction, without reading first.

        Returns ``"counted"``; ``"last"`` when the listing is complete and this was the
        last outstanding file (the caller then completes the export);
        ``"already_counted"`` when an earlier attempt counted it (the caller cannot tell
        whether that attempt completed the export, so it checks); or ``"not_listed"``
        when the export never listed ``file_id`` or is unknown (nothing counted).

        The outcome goes onto the file's ``LISTED#`` item; one written by an older
        release (no ``counts_outcome``) keeps its outcomes in ``FILE#`` items, and so
        does an export counted without ids (see the module docstring).
        """
        expr, values = self._outcome_update(
            export_id, outcome, size=size, bucket=bucket, prefix=prefix, tenant=tenant
        )
        marker = {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": _pk(export_id), "sk": {"S": f"LISTED#{file_id}"}},
                "UpdateExpression": "SET outcome = :o, detail = :d, #size = :s",
                "ConditionExpression": "counts_outcome = :yes AND attribute_not_exists(outcome)",
                "ExpressionAttributeNames": {"#size": "size"},
                "ExpressionAttributeValues": {
                    ":o": {"S": outcome},
                    ":d": {"S": detail[:1000]},
                    ":s": {"N": str(size)},
                    ":yes": {"BOOL": True},
                },
                # Tells "counted before" from "not listed" (or listed by an older
                # release) without a read.
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

        def meta(condition: str | None) -> dict[str, Any]:
            given = values if condition is None else {**values, ":true": {"BOOL": True}}
            return self._meta_write(export_id, expr, given, {"#bytes": "bytes"}, condition)

        # Refused when this write would take the last outstanding file of a listed
        # export: then, and only then, the caller has completion to do.
        not_last = "NOT (listing_complete = :true AND files_outstanding <= :one_n)"
        reasons = self._transact([marker, meta(not_last)])
        if reasons is None:
            return "counted"
        found = self._marker_verdict(reasons)
        if found is None:
            # The marker took the outcome; only META's condition failed: the last file.
            # Written again without that condition, the marker's keeps it to one count.
            reasons = self._transact([marker, meta(None)])
            if reasons is None:
                return "last"
            found = self._marker_verdict(reasons)
            if found is None:
                # DynamoDB gave no reasons: read the marker to know what happened.
                found = self._read_marker(export_id, file_id)
        if found == "counted":
            return "already_counted"
        if found == "open":
            # Refused although it has no outcome: nothing is known; try again later.
            raise AwsTransientError("tracking table: a file's count was refused unexplained")
        legacy = functools.partial(
            self._count_file,
            export_id,
            file_id,
            outcome,
            size=size,
            detail=detail,
            bucket=bucket,
            prefix=prefix,
            tenant=tenant,
        )
        if found == "legacy":
            # Listed by an older release: its outcomes are FILE# items, checked here.
            listed = {
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": {"pk": _pk(export_id), "sk": {"S": f"LISTED#{file_id}"}},
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
            try:
                return legacy(checks=(listed,))
            except _NotListed:
                pass  # removed meanwhile (its TTL): treated as absent below
        state = self.get(export_id)
        if state is None or state.listed_by_id:
            # Not this export's file (or no such export): counting it would drive the
            # export's outstanding count below zero or complete it early.
            return "not_listed"
        return legacy(checks=())

    @staticmethod
    def _marker_verdict(reasons: list[dict[str, Any]]) -> str | None:
        """What a cancelled count says of the file's ``LISTED#`` item.

        ``None`` when the item took the outcome (only META's condition failed, or
        DynamoDB gave no reasons); else ``"counted"`` (it carries an outcome),
        ``"legacy"`` (written by an older release) or ``"absent"``.
        """
        if not reasons or reasons[0].get("Code") != "ConditionalCheckFailed":
            return None
        return _verdict(reasons[0].get("Item"))

    def _read_marker(self, export_id: str, file_id: str) -> str:
        item = call_aws(
            self._db.get_item,
            TableName=self._table,
            Key={"pk": _pk(export_id), "sk": {"S": f"LISTED#{file_id}"}},
            ConsistentRead=True,
        ).get("Item")
        return _verdict(item)

    def _count_file(
        self,
        export_id: str,
        file_id: str,
        outcome: FileOutcome,
        *,
        size: int,
        detail: str,
        checks: tuple[dict[str, Any], ...],
        bucket: str,
        prefix: str,
        tenant: str | None,
    ) -> FileCount:
        """One outcome, conditionally on not being the last (see the module docstring).

        Raises:
            _NotListed: one of ``checks`` failed.
        """
        expr, values = self._outcome_update(
            export_id, outcome, size=size, bucket=bucket, prefix=prefix, tenant=tenant
        )
        item = {
            "outcome": {"S": outcome},
            "detail": {"S": detail[:1000]},
            "size": {"N": str(size)},
        }
        record = functools.partial(
            self._record_codes,
            export_id,
            f"FILE#{file_id}",
            item=item,
            expr=expr,
            names={"#bytes": "bytes"},
            checks=checks,
        )
        # Refused when this write would take the last outstanding file of a listed
        # export: then, and only then, the caller has completion to do.
        not_last = "NOT (listing_complete = :true AND files_outstanding <= :one_n)"
        codes = record(values={**values, ":true": {"BOOL": True}}, meta_condition=not_last)
        if codes is None:
            return "counted"
        if codes and codes[0] == "ConditionalCheckFailed":
            return "already_counted"
        # The META condition failed (or DynamoDB gave no reasons): write it again
        # without the condition; the FILE# marker still keeps it to one count.
        codes = record(values=values, meta_condition=None)
        return "last" if codes is None else "already_counted"

    def _record_codes(
        self,
        export_id: str,
        sk: str,
        *,
        item: dict[str, Any],
        expr: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
        checks: tuple[dict[str, Any], ...] = (),
        meta_condition: str | None = None,
    ) -> list[str] | None:
        """Write item ``sk`` once and apply ``expr`` to META in the same transaction.

        ``checks`` (condition checks) go between the two writes; ``meta_condition`` is
        an optional condition on META. Returns ``None`` when written, else the
        cancellation codes per item (``[]`` when DynamoDB gave none): the first is
        ``ConditionalCheckFailed`` when ``sk`` existed (counted before).

        Raises:
            _NotListed: one of ``checks`` failed.
        """
        return self._transact_codes(
            [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": {
                            "pk": _pk(export_id),
                            "sk": {"S": sk},
                            **item,
                            "expires_at": values[":ttl"],
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                *checks,
                self._meta_write(export_id, expr, values, names or {}, meta_condition),
            ]
        )

    def _meta_write(
        self,
        export_id: str,
        expr: str,
        values: dict[str, Any],
        names: dict[str, str],
        condition: str | None,
    ) -> dict[str, Any]:
        """The transaction item applying ``expr`` to META (only if ``condition`` holds)."""
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": _pk(export_id), "sk": {"S": "META"}},
            "UpdateExpression": expr,
            "ExpressionAttributeNames": {**_names(values), **names},
            "ExpressionAttributeValues": values,
        }
        if condition is not None:
            update["ConditionExpression"] = condition
        return {"Update": update}

    def _transact_codes(
        self, items: list[dict[str, Any]], *, attempts: int = 6
    ) -> list[str] | None:
        """Run the transaction; ``None`` when written, else the failed conditions' codes.

        Raises:
            _NotListed: a condition check between the first and last item failed (and
                the first item's did not).
        """
        reasons = self._transact(items, attempts=attempts)
        if reasons is None:
            return None
        codes = [str(r.get("Code", "None")) for r in reasons]
        if codes and codes[0] == "ConditionalCheckFailed":
            return codes  # already counted: a re-run page or a redelivered job
        if "ConditionalCheckFailed" in codes[1:-1]:
            raise _NotListed
        return codes  # the condition on META ([] when DynamoDB gave no reasons)

    def _transact(
        self, items: list[dict[str, Any]], *, attempts: int = 6
    ) -> list[dict[str, Any]] | None:
        """Run the transaction; ``None`` when written, else its cancellation reasons
        (``[]`` when DynamoDB gave none) when a condition failed.

        Conflicts with another transaction on the same items are retried with backoff.
        """
        for attempt in range(attempts):
            try:
                call_aws(self._db.transact_write_items, TransactItems=items)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                raw: Any = exc.response.get("CancellationReasons", [])
                reasons: list[dict[str, Any]] = [dict(r) for r in raw]
                codes = [str(r.get("Code", "None")) for r in reasons]
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if not codes and "ConditionalCheckFailed" in str(exc):
                    return []
                if "TransactionConflict" in codes and attempt + 1 < attempts:
                    # Another transaction on the export's META item: back off and retry.
                    time.sleep(random.uniform(0.05, 0.2) * 2**attempt)  # noqa: S311
                    continue
                if "TransactionConflict" in codes:
                    raise AwsTransientError("tracking table: transaction kept conflicting") from exc
                raise
            return None
        return None

    def get(self, export_id: str, *, submitted: bool = False) -> ExportState | None:
        """The export's current state (strongly consistent), or ``None`` if unknown.

        With ``submitted``, an export that was submitted (:meth:`record_request`) but not
        listed yet comes back with status :data:`SUBMITTED`, no counts, and its
        submission time as first and last activity.
        """
        item = call_aws(
            self._db.get_item,
            TableName=self._table,
            Key={"pk": _pk(export_id), "sk": {"S": "META"}},
            ConsistentRead=True,
        ).get("Item")
        if item:
            return ExportState.from_item(item)
        if not submitted:
            return None
        request = call_aws(
            self._db.get_item,
            TableName=self._table,
            Key={"pk": _pk(export_id), "sk": {"S": "REQUEST"}},
            ConsistentRead=True,
        ).get("Item")
        if not request:
            return None
        return ExportState.from_item({**request, "status": {"S": SUBMITTED}})

    def record_request(
        self, export_id: str, *, bucket: str, prefix: str, tenant: str | None = None
    ) -> None:
        """Record that ``export_id`` was submitted (a re-submission updates the time)."""
        now = time.time()
        item: dict[str, Any] = {
            "pk": _pk(export_id),
            "sk": {"S": "REQUEST"},
            "bucket": {"S": bucket},
            "prefix": {"S": prefix},
            "first_activity": {"N": f"{now:.3f}"},
            "last_activity": {"N": f"{now:.3f}"},
            "expires_at": {"N": str(int(now) + self._ttl)},
        }
        if tenant:
            item["tenant"] = {"S": tenant}
        call_aws(self._db.put_item, TableName=self._table, Item=item)

    def file_outcomes(self, export_id: str) -> Iterator[tuple[str, str, str, int]]:
        """Every recorded file outcome as ``(file_id, outcome, detail, size)``, paged.

        Outcomes on ``LISTED#`` items first, then ``FILE#`` items (an export listed by
        an older release), each in file id order.
        """
        for prefix in ("LISTED#", "FILE#"):
            for item in self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :f)",
                FilterExpression="attribute_exists(outcome)",
                ExpressionAttributeValues={":pk": _pk(export_id), ":f": {"S": prefix}},
            ):
                yield (
                    item["sk"]["S"].removeprefix(prefix),
                    item["outcome"]["S"],
                    item.get("detail", {}).get("S", ""),
                    int(item.get("size", {}).get("N", "0")),
                )

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item a Query on the table returns, page after page."""
        for page in call_aws_pages(self._db, "query", TableName=self._table, **kwargs):
            yield from page.get("Items", [])

    def try_claim_completion(self, export_id: str, owner: str, *, stale_after: float = 900) -> bool:
        """Claim the right to complete the export; exactly one caller gets ``True``.

        Succeeds only when the listing is complete, nothing is outstanding, the export is
        not finished, and nobody holds a claim younger than ``stale_after`` seconds (a
        claimer that died mid-completion is taken over after that).

        Each call claims under its own token, so a retry of the same call (its first
        response lost, the update applied) recognises its own claim; any other call --
        another process, or another thread of this one -- does not.
        """
        now = time.time()
        claim = f"{owner}#{uuid.uuid4().hex[:12]}"
        try:
            call_aws(
                self._db.update_item,
                TableName=self._table,
                Key={"pk": _pk(export_id), "sk": {"S": "META"}},
                UpdateExpression="SET claimed_by = :me, claimed_at = :now",
                ConditionExpression=(
                    "listing_complete = :true AND files_outstanding = :zero AND "
                    "#st = :listing AND (attribute_not_exists(claimed_at) OR "
                    "claimed_at < :stale OR claimed_by = :me)"
                ),
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":me": {"S": claim},
                    ":now": {"N": f"{now:.3f}"},
                    ":true": {"BOOL": True},
                    ":zero": {"N": "0"},
                    ":listing": {"S": "listing"},
                    ":stale": {"N": f"{now - stale_after:.3f}"},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def mark_completed(self, export_id: str, *, status: str, manifest_key: str) -> None:
        """Record the export as finished and take it off the active index."""
        call_aws(
            self._db.update_item,
            TableName=self._table,
            Key={"pk": _pk(export_id), "sk": {"S": "META"}},
            UpdateExpression=(
                "SET #st = :status, manifest_key = :m, completed_at = :now, last_activity = :now "
                "REMOVE active"
            ),
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":status": {"S": status},
                ":m": {"S": manifest_key},
                ":now": {"N": f"{time.time():.3f}"},
            },
        )

    def mark_failed(
        self, export_id: str, reason: str, *, bucket: str, prefix: str, tenant: str | None = None
    ) -> None:
        """Record an export-level failure (export failed/expired upstream, auth refused)."""
        expr, values = self._meta_update(export_id, bucket=bucket, prefix=prefix, tenant=tenant)
        expr = expr.replace("#st = if_not_exists(#st, :listing)", "#st = :failed")
        expr = expr.replace(", active = if_not_exists(active, :one)", "")
        values.pop(":one")
        values.pop(":listing")
        values[":failed"] = {"S": "failed"}
        values[":reason"] = {"S": reason[:1000]}
        call_aws(
            self._db.update_item,
            TableName=self._table,
            Key={"pk": _pk(export_id), "sk": {"S": "META"}},
            UpdateExpression=expr + ", failure_reason = :reason REMOVE active",
            ExpressionAttributeNames=_names(values),
            ExpressionAttributeValues=values,
        )

    def stalled(self, stall_seconds: float, *, now: float | None = None) -> list[ExportState]:
        """Active exports with no activity for ``stall_seconds`` (sparse-index query)."""
        cutoff = (now if now is not None else time.time()) - stall_seconds
        items = self._query(
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="active = :one AND last_activity < :cutoff",
            ExpressionAttributeValues={":one": {"S": "1"}, ":cutoff": {"N": f"{cutoff:.3f}"}},
        )
        return [ExportState.from_item(item) for item in items]

    def create_table(self) -> None:
        """Create the table with its ``active`` index (local stack and tests; CDK in AWS)."""
        call_aws(
            self._db.create_table,
            TableName=self._table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "active", "AttributeType": "S"},
                {"AttributeName": "last_activity", "AttributeType": "N"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": ACTIVE_INDEX,
                    "KeySchema": [
                        {"AttributeName": "active", "KeyType": "HASH"},
                        {"AttributeName": "last_activity", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
