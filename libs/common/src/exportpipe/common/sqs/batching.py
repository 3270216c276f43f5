"""Batched SQS writes: one partial-failure loop, and the acknowledgement outbox.

:func:`send_batch` sends up to ten entries and retries only the ones SQS failed on its
side. :class:`Outbox` collects the deletes and visibility changes of every job a
consumer runs and sends them ten at a time, flushed when a batch is full or its oldest
entry has waited :data:`LINGER_SECONDS`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aws_lambda_powertools import Logger

from exportpipe.common.observability import Metrics
from exportpipe.common.retry import call_aws, retry_unfinished

__all__ = ["BATCH_MAX", "LINGER_SECONDS", "BatchOutcome", "Outbox", "send_batch"]

BATCH_MAX = 10
"""SQS's most entries per batch call (and messages per receive)."""
LINGER_SECONDS = 0.1
"""The longest an acknowledgement waits in the outbox for its batch to fill."""


@dataclass(frozen=True)
class BatchOutcome:
    """What :func:`send_batch` could not do.

    Attributes:
        rejected: ``Failed`` entries that were the sender's fault (not retried), each
            with the request entry under ``"Entry"``.
        unresolved: request entries that still failed on SQS's side after every attempt,
            or whose batch call raised.
        calls: requests made.
    """

    rejected: list[dict[str, Any]]
    unresolved: list[dict[str, Any]]
    calls: int


def send_batch(
    call: Callable[..., Any],
    *,
    queue_url: str,
    entries: list[dict[str, Any]],
    attempts: int = 5,
) -> BatchOutcome:
    """Send up to ten ``entries`` (each with a unique ``Id``) with one batch ``call``.

    SQS answers a batch with HTTP 200 and a ``Failed`` list; the entries that failed on
    its side are sent again (and only they) by
    :func:`~exportpipe.common.retry.retry_unfinished`, up to ``attempts`` calls; sender
    faults are returned at once, never retried. Whole-call failures are botocore's to
    retry (the client's retry mode): this is only for partial batch failures.
    """
    if len(entries) > BATCH_MAX:
        raise ValueError(f"a batch holds at most {BATCH_MAX} entries, got {len(entries)}")
    rejected: list[dict[str, Any]] = []
    left: dict[str, dict[str, Any]] = {e["Id"]: e for e in entries}
    calls = 0

    def attempt(pending: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        nonlocal calls, left
        calls += 1
        response = call_aws(call, QueueUrl=queue_url, Entries=list(pending.values()))
        failed = response.get("Failed", [])
        rejected.extend(f | {"Entry": pending[f["Id"]]} for f in failed if f.get("SenderFault"))
        left = {f["Id"]: pending[f["Id"]] for f in failed if not f.get("SenderFault")}
        return left

    try:
        if left:
            retry_unfinished(attempt, dict(left), what="batch entries", attempts=attempts)
    except Exception:  # still failing, or the call itself failed: the caller decides
        return BatchOutcome(rejected, list(left.values()), calls)
    return BatchOutcome(rejected, [], calls)


@dataclass(frozen=True)
class _Outgoing:
    """A delete or visibility change waiting in the outbox."""

    kind: Literal["delete", "visibility"]
    message_id: str
    receipt_handle: str
    seconds: int = 0


class Outbox:
    """The deletes and visibility changes of one queue's jobs, sent in batches of ten.

    :meth:`run` sends until :meth:`close`; whatever is queued then is flushed first. A
    failed acknowledgement is logged, never raised: an undeleted message comes back
    after its visibility and is acknowledged then as a duplicate, and a visibility
    change that did not happen only happens later.
    """

    def __init__(self, sqs: Any, queue_url: str, *, logger: Logger, metrics: Metrics) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._log = logger
        self._metrics = metrics
        self._items: queue.Queue[_Outgoing | None] = queue.Queue()
        self._thread = threading.Thread(target=self.run, name="outbox", daemon=True)

    def delete(self, message_id: str, receipt_handle: str) -> None:
        """Delete the message (batched)."""
        self._items.put(_Outgoing("delete", message_id, receipt_handle))

    def change_visibility(self, message_id: str, receipt_handle: str, seconds: int) -> None:
        """Make the message visible again in ``seconds`` (batched; 0 releases it)."""
        self._items.put(_Outgoing("visibility", message_id, receipt_handle, seconds))

    def start(self) -> None:
        """Run :meth:`run` on a thread of its own."""
        self._thread.start()

    def close(self, *, timeout: float = 30.0) -> None:
        """Flush what is queued and stop the thread :meth:`start` began."""
        self._items.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def run(self) -> None:
        """Send batches until :meth:`close`."""
        # A kind's batch goes out when it has ten entries or the oldest pending entry has
        # waited LINGER_SECONDS, so a finished message is never held long.
        pending: list[_Outgoing] = []
        oldest = 0.0
        while True:
            timeout = LINGER_SECONDS if not pending else oldest + LINGER_SECONDS - time.monotonic()
            try:
                item = self._items.get(timeout=max(0.0, timeout))
            except queue.Empty:
                item = _Outgoing("delete", "", "")  # a tick: flush what lingered
            if item is not None and item.receipt_handle:
                if not pending:
                    oldest = time.monotonic()
                pending.append(item)
                full = sum(1 for p in pending if p.kind == item.kind) >= BATCH_MAX
                if not full and time.monotonic() - oldest < LINGER_SECONDS:
                    continue
            self._flush(pending)
            pending = []
            if item is None:
                return

    def _flush(self, pending: list[_Outgoing]) -> None:
        for kind in ("delete", "visibility"):
            items = [p for p in pending if p.kind == kind]
            for start in range(0, len(items), BATCH_MAX):
                self._flush_batch(kind, items[start : start + BATCH_MAX])

    def _flush_batch(self, kind: str, batch: list[_Outgoing]) -> None:
        if kind == "delete":
            call = self._sqs.delete_message_batch
            entries: list[dict[str, Any]] = [
                {"Id": str(i), "ReceiptHandle": p.receipt_handle} for i, p in enumerate(batch)
            ]
        else:
            call = self._sqs.change_message_visibility_batch
            entries = [
                {"Id": str(i), "ReceiptHandle": p.receipt_handle, "VisibilityTimeout": p.seconds}
                for i, p in enumerate(batch)
            ]
        outcome = send_batch(call, queue_url=self._queue_url, entries=entries)
        done = len(batch) - len(outcome.rejected) - len(outcome.unresolved)
        if kind == "delete":
            self._metrics.add("MessagesDeleted", done)
        for failed in outcome.rejected:
            # The receipt handle expired: the message is visible again or held by
            # another consumer, whose idempotency check acknowledges it.
            self._log.warning(
                f"{kind} refused",
                extra={
                    "message_id": batch[int(failed["Id"])].message_id,
                    "code": failed.get("Code"),
                },
            )
        if outcome.unresolved:
            # Not acknowledged: the message comes back after its visibility and is then
            # acknowledged as a duplicate (or, for a visibility change, simply later).
            self._log.error(f"{kind} failed", extra={"entries": len(outcome.unresolved)})
