"""Batch producer: SendMessageBatch in groups of 10, concurrent batches, partial retries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError

from exportpipe.common.errors import PermanentError
from exportpipe.common.retry import call_aws, retry_unfinished
from exportpipe.common.schemas import Message, encode

__all__ = ["MAX_BATCH_BYTES", "BatchProducer", "SendFailed"]

MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 256 * 1024
"""SendMessageBatch's payload limit (sum of bodies); kept at the classic 256 KiB."""


class SendFailed(PermanentError):
    """SQS refused a message for good (sender fault), e.g. a body over the size limit."""

    reason = "send_rejected"


def _batches(bodies: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + length > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
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

        Raises:
            SendFailed: SQS rejected an entry as the sender's fault.
            AwsTransientError: entries kept failing after every retry.
        """
        return self.send_bodies((encode(m) for m in messages), delay_seconds=delay_seconds)

    def send_bodies(self, bodies: Iterable[str], *, delay_seconds: int = 0) -> int:
        """Like :meth:`send` for already-encoded bodies."""
        sent = 0
        running: set[Future[int]] = set()
        batches = _batches(bodies)
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

    def _send_batch(self, bodies: list[str], delay_seconds: int) -> int:
        def attempt(pending: dict[str, str]) -> dict[str, str]:
            self.requests += 1
            try:
                response = call_aws(
                    self._sqs.send_message_batch,
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": key, "MessageBody": body, "DelaySeconds": delay_seconds}
                        for key, body in pending.items()
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
            return {key: body for key, body in pending.items() if key not in done}

        retry_unfinished(
            attempt,
            {str(i): body for i, body in enumerate(bodies)},
            what="message(s)",
            attempts=self._max_attempts,
        )
        return len(bodies)
