"""Operator queries on a queue: how many messages it holds, in which state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["QueueDepth", "queue_depth"]


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate message counts, as SQS reports them."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        """Every message the queue holds, whatever its state."""
        return self.visible + self.in_flight + self.delayed


_DEPTH_ATTRIBUTES = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    """The approximate visible, in-flight and delayed counts of ``queue_url``."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES.values())
    )["Attributes"]
    return QueueDepth(
        **{field: int(attrs.get(name, 0)) for field, name in _DEPTH_ATTRIBUTES.items()}
    )
