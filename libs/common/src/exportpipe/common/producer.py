"""Batch producer: SendMessageBatch in groups of 10, concurrent batches, partial retries.

Every ``ExportRequested`` and ``DownloadJob`` goes out with ``MessageGroupId`` = its
tenant (:mod:`exportpipe.common.tenancy`), which makes the standard queues fair queues.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError

from exportpipe.common.errors import PermanentError
from exportpipe.common.retry import call_aws, retry_unfinished
from exportpipe.common.schemas import DownloadJob, ExportRequested, Message, encode
from exportpipe.common.tenancy import message_group_id

__all__ = ["MAX_BATCH_BYTES", "BatchProducer", "SendFailed"]

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
"""SendMessageBatch's payload limit (sum of bodies); kept at the classic 256 KiB."""


class SendFailed(PermanentError):
    """SQS refused a message for good (sender fault), e.g. a body over the size limit."""

    reason = "send_rejected"


_Entry = tuple[str, str | None]
"""A body and its ``MessageGroupId`` (``None``: sent without one)."""


def _entry(message: Message) -> _Entry:
    group = (
        message_group_id(message) if isinstance(message, ExportRequested | DownloadJob) else None
    )
    return encode(message), group


def _batches(entries: Iterable[_Entry]) -> Iterator[list[_Entry]]:
    batch: list[_Entry] = []
    size = 0
    for entry in entries:
        length = len(entry[0].encode())
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + length > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


class BatchProducer:
    """Sends messages to one queue in batches of up to 10, several batches at once.

    Only the entries SQS reports as failed are retried, with backoff; an entry failing
    with a sender fault raises :class:`SendFailed` (retrying cannot help).
    Memory stays bounded: at most ``max_concurrency`` batches are in flight.
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        max_concurrency: int = 4,
        max_attempts: int = 8,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._max_concurrency = max_concurrency
        self._max_attempts = max_attempts
        self._executor = executor or ThreadPoolExecutor(max_concurrency, thread_name_prefix="send")
        self.requests = 0
        """SendMessageBatch calls made (including retries); for metrics and benchmarks."""

    def send(self, messages: Iterable[Message], *, delay_seconds: int = 0) -> int:
        """Send every message; returns how many were sent.

        ``ExportRequested`` and ``DownloadJob`` messages carry their tenant's
        ``MessageGroupId`` (:func:`exportpipe.common.tenancy.message_group_id`).

        Raises:
            SendFailed: SQS rejected an entry as the sender's fault.
            AwsTransientError: entries kept failing after every retry.
        """
        return self._send_entries((_entry(m) for m in messages), delay_seconds)

    def send_bodies(
        self, bodies: Iterable[str], *, delay_seconds: int = 0, group_id: str | None = None
    ) -> int:
        """Like :meth:`send` for already-encoded bodies, all in group ``group_id``."""
        return self._send_entries(((b, group_id) for b in bodies), delay_seconds)

    def _send_entries(self, entries: Iterable[_Entry], delay_seconds: int) -> int:
        sent = 0
        running: set[Future[int]] = set()
        batches = _batches(entries)
        try:
            for batch in batches:
                if len(running) >= self._max_concurrency:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    sent += sum(f.result() for f in done)
                running.add(self._executor.submit(self._send_batch, batch, delay_seconds))
            for future in running:
                sent += future.result()
        finally:
            for future in running:
                future.cancel()
        return sent

    def close(self) -> None:
        """Release the producer's threads."""
        self._executor.shutdown(wait=True)

    def _send_batch(self, entries: list[_Entry], delay_seconds: int) -> int:
        def attempt(pending: dict[str, _Entry]) -> dict[str, _Entry]:
            self.requests += 1
            try:
                response = call_aws(
                    self._sqs.send_message_batch,
                    QueueUrl=self._queue_url,
                    Entries=[
                        _batch_entry(key, body, group, delay_seconds)
                        for key, (body, group) in pending.items()
                    ],
                )
            except ClientError as exc:  # call_aws re-raises only non-transient ones
                code = exc.response.get("Error", {}).get("Code", "ClientError")
                raise SendFailed(f"SQS rejected the batch: {code}") from exc
            failed = response.get("Failed", [])
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal:
                first = fatal[0]
                raise SendFailed(
                    f"SQS rejected {len(fatal)} message(s): {first.get('Code')}: "
                    f"{first.get('Message', '')}"
                )
            done = {ok["Id"] for ok in response.get("Successful", [])}
            return {key: entry for key, entry in pending.items() if key not in done}

        retry_unfinished(
            attempt,
            {str(i): entry for i, entry in enumerate(entries)},
            what="message(s)",
            attempts=self._max_attempts,
        )
        return len(entries)


def _batch_entry(key: str, body: str, group: str | None, delay_seconds: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": key, "MessageBody": body, "DelaySeconds": delay_seconds}
    if group is not None:
        entry["MessageGroupId"] = group
    return entry
