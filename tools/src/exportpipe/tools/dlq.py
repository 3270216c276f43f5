"""``exportpipe dlq``: inspect dead letters with their reasons, and redrive them.

What a dead letter records, and how one moved by SQS's redrive policy reads, is the
queue runtime's (:mod:`exportpipe.common.sqs.deadletters`, writer and reader together).

Reading a dead-letter queue hides the messages read for a short time; every listing
makes them visible again before it returns, so listing twice shows the same messages.
Redrive sends each body back to the queue the DLQ belongs to, *then* deletes it from the
DLQ: a crash in between leaves a duplicate, which both services tolerate, never a loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Literal

from exportpipe.common.sqs.deadletters import (
    REDRIVEN_ATTRIBUTE,
    DeadLetter,
    read_dead_letter,
)
from exportpipe.common.tenancy import group_id_for_body
from exportpipe.tools.context import Stack
from exportpipe.tools.errors import CliError

__all__ = [
    "QUEUES",
    "DeadLetter",
    "QueueName",
    "find_dead_letter",
    "list_dead_letters",
    "redrive",
]

QueueName = Literal["requests", "jobs"]
QUEUES: tuple[QueueName, ...] = ("requests", "jobs")
_HIDE_SECONDS = 30
_MAX_MESSAGES = 10_000


def _receive_all(sqs: Any, queue: QueueName, dlq_url: str) -> list[DeadLetter]:
    """Every message in the DLQ, each hidden briefly while the scan runs."""
    seen: dict[str, DeadLetter] = {}
    empty_polls = 0
    while len(seen) < _MAX_MESSAGES and empty_polls < 2:
        batch = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=_HIDE_SECONDS,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        new = [m for m in batch if m["MessageId"] not in seen]
        empty_polls = 0 if new else empty_polls + 1
        for message in new:
            seen[message["MessageId"]] = read_dead_letter(queue, message)
    return list(seen.values())


def _unhide(sqs: Any, dlq_url: str, letters: Iterable[DeadLetter]) -> None:
    pending = list(letters)
    for start in range(0, len(pending), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
            for i, letter in enumerate(pending[start : start + 10])
        ]
        with contextlib.suppress(Exception):  # they reappear on their own in 30 s anyway
            sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=entries)


def list_dead_letters(stack: Stack, queues: Iterable[QueueName] = QUEUES) -> list[DeadLetter]:
    """Every dead letter of ``queues`` (left in place, visible again on return)."""
    sqs = stack.client("sqs")
    out: list[DeadLetter] = []
    for queue in queues:
        _url, dlq_url = stack.queue_urls(queue)
        letters = _receive_all(sqs, queue, dlq_url)
        _unhide(sqs, dlq_url, letters)
        out += letters
    return out


def find_dead_letter(letters: Iterable[DeadLetter], message_id: str) -> DeadLetter:
    """The dead letter whose id is ``message_id`` or starts with it (at least 6 chars).

    Raises:
        CliError: none, or more than one, matches.
    """
    letters = list(letters)
    exact = [d for d in letters if d.message_id == message_id]
    if exact:
        return exact[0]
    if len(message_id) >= 6:
        matches = [d for d in letters if d.message_id.startswith(message_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CliError(f"message id prefix {message_id!r} is ambiguous; give more of it")
    raise CliError(f"no dead letter with message id {message_id!r} (see `exportpipe dlq list`)")


def _send_back(sqs: Any, url: str, body: str) -> None:
    """Send ``body`` to ``url`` in its tenant's message group (fair queues, ADR 0018)."""
    group = group_id_for_body(body)
    grouped = {} if group is None else {"MessageGroupId": group}
    # Marked, so the consumer knows an earlier attempt ran (ADR 0015).
    marked = {REDRIVEN_ATTRIBUTE: {"DataType": "String", "StringValue": "1"}}
    sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=marked, **grouped)


def redrive(
    stack: Stack, queues: Iterable[QueueName] = QUEUES, *, message_id: str | None = None
) -> list[DeadLetter]:
    """Send dead letters back to their source queue and delete them from the DLQ.

    Args:
        stack: where.
        queues: which queue pairs.
        message_id: only this message (full id or a unique prefix).

    Returns:
        The messages redriven.

    Raises:
        CliError: ``message_id`` matches no dead letter.
    """
    sqs = stack.client("sqs")
    scanned: list[tuple[str, str, list[DeadLetter]]] = []
    done: list[DeadLetter] = []
    try:
        for queue in queues:
            url, dlq_url = stack.queue_urls(queue)
            scanned.append((url, dlq_url, _receive_all(sqs, queue, dlq_url)))
        target = None
        if message_id is not None:
            target = find_dead_letter((d for *_, ls in scanned for d in ls), message_id)
        for url, dlq_url, letters in scanned:
            for letter in letters:
                if target is None or letter is target:
                    _send_back(sqs, url, letter.body)
                    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)
                    done.append(letter)
        return done
    finally:
        for _url, dlq_url, letters in scanned:
            _unhide(sqs, dlq_url, [d for d in letters if all(d is not x for x in done)])
