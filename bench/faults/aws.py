"""AWS faults: time windows during which the fault proxy fails S3, SQS or DynamoDB calls.

The services reach the moto server only through a :class:`FaultProxy`; this module is
its rule. A window opened by :meth:`AwsFaults.open` makes each request to its service
fail with its probability until it closes. Draws come from a generator seeded with the
run's seed (which requests are hit depends on request order, which is not
reproducible; the windows themselves are).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from exportpipe.testing import Fault, Request

__all__ = ["FAULTS", "AwsFaults", "service_of"]

FAULTS: dict[str, tuple[str, Fault]] = {
    "s3_reset": ("s3", Fault(reset=True)),
    "s3_lost_response": ("s3", Fault(drop_response=True)),
    "s3_500": ("s3", Fault(status=500, error_code="InternalError")),
    "s3_slowdown": ("s3", Fault(status=503, error_code="SlowDown")),
    "sqs_reset": ("sqs", Fault(reset=True)),
    "sqs_lost_response": ("sqs", Fault(drop_response=True)),
    "sqs_500": ("sqs", Fault(status=500, error_code="InternalError")),
    "sqs_throttle": ("sqs", Fault(status=400, error_code="ThrottlingException")),
    "sqs_batch_partial": ("sqs", Fault(fail_batch_entries=2)),
    "dynamodb_throttle": (
        "dynamodb",
        Fault(status=400, error_code="ProvisionedThroughputExceededException"),
    ),
}
"""Window kind -> (service, the fault a hit request gets)."""

_BATCH_CALLS = frozenset({"SendMessageBatch", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"})


def service_of(request: Request) -> str:
    """``s3``, ``sqs``, ``dynamodb`` or ``other`` (SNS and other query-protocol calls)."""
    target = request.headers.get("X-Amz-Target") or request.headers.get("x-amz-target") or ""
    if target.startswith("AmazonSQS."):
        return "sqs"
    if target.startswith("DynamoDB_"):
        return "dynamodb"
    if target or request.path.split("?", 1)[0] == "/":
        return "other"
    return "s3"


@dataclass
class _Window:
    kind: str
    service: str
    fault: Fault
    until: float
    probability: float


class AwsFaults:
    """The proxy rule: open windows, and what they did.

    Attributes:
        hits: requests failed, by window kind.
    """

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"aws:{seed}")
        self._lock = threading.Lock()
        self._windows: list[_Window] = []
        self.hits: Counter[str] = Counter()

    def open(self, kind: str, *, seconds: float, probability: float) -> None:
        """Fail requests to the kind's service for ``seconds`` with ``probability``."""
        service, fault = FAULTS[kind]
        with self._lock:
            self._windows.append(
                _Window(kind, service, fault, time.monotonic() + seconds, probability)
            )

    def close_all(self) -> None:
        """Close every window (the run is over)."""
        with self._lock:
            self._windows.clear()

    def __call__(self, request: Request) -> Fault | None:
        """The rule the proxy consults for each request."""
        now = time.monotonic()
        service = ""
        with self._lock:
            self._windows = [w for w in self._windows if w.until > now]
            for window in self._windows:
                service = service or service_of(request)
                if window.service != service:
                    continue
                if window.fault.fail_batch_entries and request.operation not in _BATCH_CALLS:
                    continue
                if self._rng.random() < window.probability:
                    self.hits[window.kind] += 1
                    return window.fault
        return None
