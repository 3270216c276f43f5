"""The dead-letter format: what the runtime writes on a dead letter, and how it is read.

The queue runtime dead-letters a permanently failed message itself, with
``exportpipe-error-*`` message attributes (type, reason, message, source queue, receive
count, time): :func:`dead_letter_attributes` writes them. A message that SQS's redrive
policy moved (too many receives: a crash loop or a bug) carries none;
:func:`read_dead_letter` reads it with reason ``max_receives_exceeded``. Writer and
reader live together so the two cannot drift (``exportpipe dlq`` reads through here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from exportpipe.common.observability import redact_text

__all__ = [
    "EARLIER_ATTEMPT_ATTRIBUTES",
    "REDRIVEN_ATTRIBUTE",
    "REDRIVE_REASON",
    "DeadLetter",
    "dead_letter_attributes",
    "read_dead_letter",
]

REDRIVEN_ATTRIBUTE = "exportpipe-redriven"
"""Set by ``exportpipe dlq redrive`` on a message it sends back to its source queue."""
REDRIVE_REASON = "max_receives_exceeded"
"""The reason of a dead letter the queue's redrive policy moved (it carries no reason)."""
_TYPE = "exportpipe-error-type"
_REASON = "exportpipe-error-reason"
_MESSAGE = "exportpipe-error-message"
_SOURCE = "exportpipe-source-queue"
_COUNT = "exportpipe-receive-count"
_FAILED_AT = "exportpipe-failed-at"
_MAX_REASON_CHARS = 1000
# Message attributes that say a message was handled before: the runtime's dead-letter
# attributes (kept when SQS moves a message back from the DLQ) and the redrive tool's.
EARLIER_ATTEMPT_ATTRIBUTES = frozenset({_REASON, _COUNT, REDRIVEN_ATTRIBUTE})


def error_text(error: BaseException) -> str:
    """``error``'s message as a dead letter and the logs carry it: redacted, bounded."""
    return redact_text(str(error))[:_MAX_REASON_CHARS] or type(error).__name__


def dead_letter_attributes(
    error: BaseException, *, source_queue: str, receive_count: int
) -> dict[str, dict[str, str]]:
    """Message attributes that record why a message was dead-lettered."""

    def s(value: str) -> dict[str, str]:
        return {"DataType": "String", "StringValue": value}

    return {
        _TYPE: s(type(error).__name__),
        _REASON: s(getattr(error, "reason", "unhandled_error")),
        _MESSAGE: s(error_text(error)),
        _SOURCE: s(source_queue),
        _COUNT: {"DataType": "Number", "StringValue": str(receive_count)},
        _FAILED_AT: s(datetime.now(UTC).isoformat()),
    }


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message.

    Attributes:
        queue: which queue pair it belongs to (``exportpipe dlq`` says ``requests`` or
            ``jobs``).
        message_id / receipt_handle: in the DLQ.
        body: the original body, unchanged (redrive sends it back as is).
        reason / error_type / error_message: why (see the module docstring).
        receive_count: receives of the original message when it failed.
        failed_at: when (ISO 8601), if recorded.
    """

    queue: str
    message_id: str
    receipt_handle: str
    body: str
    reason: str
    error_type: str
    error_message: str
    receive_count: int | None
    failed_at: str | None

    @property
    def summary(self) -> str:
        """``export_id`` and ``file_id``/``page`` from the body, when it is ours."""
        try:
            raw = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return "<not JSON>"
        if not isinstance(raw, dict):
            return "<not an object>"
        parts = [f"export={raw['export_id']}"] if "export_id" in raw else []
        if "file_id" in raw:
            parts.append(f"file={raw['file_id']}")
        elif "page" in raw:
            parts.append(f"page={raw['page']}")
        return " ".join(parts) or str(raw.get("schema", "<unknown body>"))

    def shown_body(self) -> str:
        """The body pretty-printed, with URL query strings and tokens redacted."""
        try:
            text = orjson.dumps(orjson.loads(self.body), option=orjson.OPT_INDENT_2).decode()
        except orjson.JSONDecodeError:
            text = self.body
        return redact_text(text)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view: every field but the receipt handle and the body, a summary."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("receipt_handle", "body")}
        return fields | {"summary": self.summary}


def read_dead_letter(queue: str, message: dict[str, Any]) -> DeadLetter:
    """The dead letter ``message`` (as ``ReceiveMessage`` returns it) records."""
    attrs = {k: v.get("StringValue", "") for k, v in message.get("MessageAttributes", {}).items()}
    count = attrs.get(_COUNT) or message.get("Attributes", {}).get("ApproximateReceiveCount")
    ours = _REASON in attrs
    return DeadLetter(
        queue=queue,
        message_id=str(message["MessageId"]),
        receipt_handle=str(message["ReceiptHandle"]),
        body=str(message.get("Body", "")),
        reason=attrs.get(_REASON) or REDRIVE_REASON,
        error_type=attrs.get(_TYPE, "" if ours else "RedrivePolicy"),
        error_message=attrs.get(
            _MESSAGE,
            "" if ours else "moved by the queue's redrive policy after too many receives",
        ),
        receive_count=int(count) if count and str(count).isdigit() else None,
        failed_at=attrs.get(_FAILED_AT),
    )
