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

import random
import re
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from exportpipe.common.errors import AwsTransientError
from exportpipe.common.retry import aws_error_code, call_aws, call_aws_pages

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
_TRANSACT_ATTEMPTS = 6  # a transaction that conflicts with another one is tried again
_MARKERS_IN_FLIGHT = 4  # conditional LISTED# puts of one page at once (x the
# orchestrator's concurrent pages: within the client's 20 pooled connections)


def _names(*expressions: str) -> dict[str, str]:
    """Placeholders for the attribute names the expressions write as ``#name``: each
    stands for the attribute of that name (DynamoDB reserves ``status``, ``size``...)."""
    return {f"#{name}": name for name in re.findall(r"#(\w+)", " ".join(expressions))}


class _NotListed(Exception):
    """A file outcome's ``LISTED#`` condition check failed."""


def _pk(export_id: str) -> dict[str, str]:
    return {"S": f"EXPORT#{export_id}"}


def _key(export_id: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": _pk(export_id), "sk": {"S": sk}}


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

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    @property
    def table(self) -> str:
        """The table name."""
        return self._table

    @staticmethod
    def _meta_update(*, bucket: str, prefix: str, tenant: str | None) -> tuple[str, dict[str, Any]]:
        now = time.time()
        expr = (
            "SET #status = if_not_exists(#status, :listing), #bucket = if_not_exists(#bucket, :b), "
            "#prefix = if_not_exists(#prefix, :p), first_activity = if_not_exists("
            "first_activity, :now), last_activity = :now, expires_at = :ttl, "
            "active = if_not_exists(active, :one)"
        )
        values: dict[str, Any] = {
            ":listing": {"S": "listing"},
            ":b": {"S": bucket},
            ":p": {"S": prefix},
            ":now": {"N": f"{now:.3f}"},
            ":ttl": {"N": str(int(now) + _TTL_SECONDS)},
            ":one": {"S": "1"},
        }
        if tenant:
            expr += ", #tenant = if_not_exists(#tenant, :t)"
            values[":t"] = {"S": tenant}
        return expr, values

    def _update(
        self,
        export_id: str,
        sk: str,
        expr: str,
        values: dict[str, Any],
        condition: str | None = None,
    ) -> dict[str, Any]:
        """The request applying ``expr`` to item ``sk`` (only if ``condition`` holds), for
        ``UpdateItem`` or, wrapped in ``{"Update": ...}``, for a transaction."""
        update: dict[str, Any] = {
            "TableName": self._table,
            "Key": _key(export_id, sk),
            "UpdateExpression": expr,
            "ExpressionAttributeNames": _names(expr, condition or ""),
            "ExpressionAttributeValues": values,
        }
        if condition is not None:
            update["ConditionExpression"] = condition
        return update

    def _put_once(
        self, export_id: str, sk: str, item: dict[str, Any], expires: dict[str, str]
    ) -> dict[str, Any]:
        """The request writing item ``sk`` unless it exists (``PutItem`` or, wrapped in
        ``{"Put": ...}``, a transaction's)."""
        return {
            "TableName": self._table,
            "Item": {**_key(export_id, sk), **item, "expires_at": expires},
            "ConditionExpression": "attribute_not_exists(pk)",
        }

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
        expr, values = self._meta_update(bucket=bucket, prefix=prefix, tenant=tenant)
        # A newly listed page (re)opens the export: after a failure and a redrive of the
        # page that failed, it is listing again.
        expr = expr.replace("#status = if_not_exists(#status, :listing)", "#status = :listing")
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
        page_item = self._put_once(
            export_id, f"PAGE#{page:09d}", {"files": {"N": str(count)}}, values[":ttl"]
        )
        reasons = self._transact(
            [{"Put": page_item}, {"Update": self._update(export_id, "META", expr, values)}]
        )
        return reasons is None  # False: the page was counted before

    def _mark_listed(self, export_id: str, file_ids: Collection[str]) -> None:
        """Write each file id's ``LISTED#`` item unless it exists.

        Conditional puts, one per file (one write unit each, like a batch put): a
        re-run page, or a second listing of the export running at the same time, must
        never replace an item that already carries the file's outcome -- the outcome
        would be counted again. ``BatchWriteItem`` cannot be conditional.
        """
        expires = {"N": str(int(time.time()) + _TTL_SECONDS)}

        def mark(file_id: str) -> None:
            marker = {"counts_outcome": {"BOOL": True}}
            try:
                call_aws(
                    self._db.put_item,
                    **self._put_once(export_id, f"LISTED#{file_id}", marker, expires),
                )
            except ClientError as exc:
                if aws_error_code(exc) != "ConditionalCheckFailedException":
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
        expr, values = self._meta_update(bucket=bucket, prefix=prefix, tenant=tenant)
        counter = "files_done" if outcome == "done" else "files_rejected"
        expr += f" ADD {counter} :one_n, files_outstanding :minus, #bytes :size"
        values.update({":one_n": {"N": "1"}, ":minus": {"N": "-1"}, ":size": {"N": str(size)}})
        listed_sk = f"LISTED#{file_id}"
        marker = self._update(
            export_id,
            listed_sk,
            "SET outcome = :o, detail = :d, #size = :s",
            {
                ":o": {"S": outcome},
                ":d": {"S": detail[:1000]},
                ":s": {"N": str(size)},
                ":yes": {"BOOL": True},
            },
            "counts_outcome = :yes AND attribute_not_exists(outcome)",
        )
        # Tells "counted before" from "not listed" (or listed by an older release)
        # without a read.
        marker["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        written = self._count(export_id, [{"Update": marker}], expr, values)
        if isinstance(written, str):
            return written
        # The marker refused the outcome; it says why (read, if DynamoDB gave no reasons).
        found = _verdict(written.get("Item") if written else self._item(export_id, listed_sk))
        if found == "counted":
            return "already_counted"
        if found == "open":
            # Refused although it has no outcome: nothing is known; try again later.
            raise AwsTransientError("tracking table: a file's count was refused unexplained")

        def count_in_file_item(*checks: dict[str, Any]) -> FileCount:
            """The outcome as a ``FILE#`` item, kept to one count by that item."""
            fields = {
                "outcome": {"S": outcome},
                "detail": {"S": detail[:1000]},
                "size": {"N": str(size)},
            }
            item = self._put_once(export_id, f"FILE#{file_id}", fields, values[":ttl"])
            written = self._count(export_id, [{"Put": item}, *checks], expr, values)
            return written if isinstance(written, str) else "already_counted"

        if found == "legacy":
            # Listed by an older release: its outcomes are FILE# items, checked here.
            listed = {
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": _key(export_id, listed_sk),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
            try:
                return count_in_file_item(listed)
            except _NotListed:
                pass  # removed meanwhile (its TTL): treated as absent below
        state = self.get(export_id)
        if state is None or state.listed_by_id:
            # Not this export's file (or no such export): counting it would drive the
            # export's outstanding count below zero or complete it early.
            return "not_listed"
        return count_in_file_item()

    def _count(
        self, export_id: str, items: list[dict[str, Any]], expr: str, values: dict[str, Any]
    ) -> FileCount | dict[str, Any] | None:
        """Write ``items`` and apply ``expr`` (a file outcome) to META in one transaction.

        The first item's own condition keeps the outcome to one count. The first write
        is refused on META when it would take the last outstanding file of a listed
        export; then, and only then, it is written again without that condition, and
        the caller has completion to do.

        Returns:
            ``"counted"``, or ``"last"`` for the second write; when the first item's
            condition failed (counted before, or not listed), its cancellation reason;
            ``None`` when the second write was refused and DynamoDB gave no reasons.

        Raises:
            _NotListed: a condition check between the first item and META failed.
        """
        not_last = "NOT (listing_complete = :true AND files_outstanding <= :one_n)"
        writes: list[tuple[FileCount, dict[str, Any], str | None]] = [
            ("counted", {**values, ":true": {"BOOL": True}}, not_last),
            ("last", values, None),
        ]
        for written, given, condition in writes:
            meta = self._update(export_id, "META", expr, given, condition)
            reasons = self._transact([*items, {"Update": meta}])
            if reasons is None:
                return written
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return reasons[0]
            if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons[1:-1]):
                raise _NotListed
        return None

    def _transact(self, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Run the transaction; ``None`` when written, else its cancellation reasons
        (``[]`` when DynamoDB gave none) when a condition failed.

        Conflicts with another transaction on the same items are retried with backoff.
        """
        for attempt in range(_TRANSACT_ATTEMPTS):
            try:
                call_aws(self._db.transact_write_items, TransactItems=items)
                return None
            except ClientError as exc:
                if aws_error_code(exc) != "TransactionCanceledException":
                    raise
                raw: Any = exc.response.get("CancellationReasons", [])
                reasons: list[dict[str, Any]] = [dict(r) for r in raw]
                codes = [str(r.get("Code", "None")) for r in reasons]
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if not codes and "ConditionalCheckFailed" in str(exc):
                    return []
                if "TransactionConflict" not in codes:
                    raise
                if attempt + 1 == _TRANSACT_ATTEMPTS:
                    raise AwsTransientError("tracking table: transaction kept conflicting") from exc
                # Another transaction on the export's META item: back off and retry.
                time.sleep(random.uniform(0.05, 0.2) * 2**attempt)  # noqa: S311
        return None  # not reached: the last attempt returns or raises

    def _item(self, export_id: str, sk: str) -> dict[str, Any] | None:
        """Item ``sk`` of the export (strongly consistent), or ``None``."""
        item: dict[str, Any] | None = call_aws(
            self._db.get_item, TableName=self._table, Key=_key(export_id, sk), ConsistentRead=True
        ).get("Item")
        return item

    def get(self, export_id: str, *, submitted: bool = False) -> ExportState | None:
        """The export's current state (strongly consistent), or ``None`` if unknown.

        With ``submitted``, an export that was submitted (:meth:`record_request`) but not
        listed yet comes back with status :data:`SUBMITTED`, no counts, and its
        submission time as first and last activity.
        """
        item = self._item(export_id, "META")
        if item:
            return ExportState.from_item(item)
        request = self._item(export_id, "REQUEST") if submitted else None
        return ExportState.from_item({**request, "status": {"S": SUBMITTED}}) if request else None

    def record_request(
        self, export_id: str, *, bucket: str, prefix: str, tenant: str | None = None
    ) -> None:
        """Record that ``export_id`` was submitted (a re-submission updates the time)."""
        now = time.time()
        item: dict[str, Any] = {
            **_key(export_id, "REQUEST"),
            "bucket": {"S": bucket},
            "prefix": {"S": prefix},
            "first_activity": {"N": f"{now:.3f}"},
            "last_activity": {"N": f"{now:.3f}"},
            "expires_at": {"N": str(int(now) + _TTL_SECONDS)},
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
        values = {
            ":me": {"S": claim},
            ":now": {"N": f"{now:.3f}"},
            ":true": {"BOOL": True},
            ":zero": {"N": "0"},
            ":listing": {"S": "listing"},
            ":stale": {"N": f"{now - stale_after:.3f}"},
        }
        condition = (
            "listing_complete = :true AND files_outstanding = :zero AND "
            "#status = :listing AND (attribute_not_exists(claimed_at) OR "
            "claimed_at < :stale OR claimed_by = :me)"
        )
        expr = "SET claimed_by = :me, claimed_at = :now"
        try:
            call_aws(
                self._db.update_item, **self._update(export_id, "META", expr, values, condition)
            )
        except ClientError as exc:
            if aws_error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def mark_completed(self, export_id: str, *, status: str, manifest_key: str) -> None:
        """Record the export as finished and take it off the active index."""
        expr = (
            "SET #status = :status, manifest_key = :m, completed_at = :now, "
            "last_activity = :now REMOVE active"
        )
        values = {
            ":status": {"S": status},
            ":m": {"S": manifest_key},
            ":now": {"N": f"{time.time():.3f}"},
        }
        call_aws(self._db.update_item, **self._update(export_id, "META", expr, values))

    def mark_failed(
        self, export_id: str, reason: str, *, bucket: str, prefix: str, tenant: str | None = None
    ) -> None:
        """Record an export-level failure (export failed/expired upstream, auth refused)."""
        expr, values = self._meta_update(bucket=bucket, prefix=prefix, tenant=tenant)
        expr = expr.replace("#status = if_not_exists(#status, :listing)", "#status = :failed")
        expr = expr.replace(", active = if_not_exists(active, :one)", "")
        values.pop(":one")
        values.pop(":listing")
        values[":failed"] = {"S": "failed"}
        values[":reason"] = {"S": reason[:1000]}
        expr += ", failure_reason = :reason REMOVE active"
        call_aws(self._db.update_item, **self._update(export_id, "META", expr, values))

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
