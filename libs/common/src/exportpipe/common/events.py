"""Where ``ExportCompleted`` goes: an SNS topic, an EventBridge bus, or nowhere."""

from __future__ import annotations

from typing import Any

from exportpipe.common.retry import call_aws
from exportpipe.common.schemas import ExportCompleted, encode

__all__ = ["EventPublisher"]


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
