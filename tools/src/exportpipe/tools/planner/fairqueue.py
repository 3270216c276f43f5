"""SQS 2's delivery order with and without fair queues, for the planner.

A standard queue hands out roughly its oldest visible messages first: a tenant that
enqueues 200,000 jobs at once puts everyone who comes after it behind all of them.
With ``MessageGroupId`` = tenant (ADR 0018) the queue is a *fair queue*, and SQS
prefers messages of *quiet* tenants over those of *noisy* ones. The documented rules
(Amazon SQS Developer Guide, "How Amazon SQS fair queues work"), modelled here:

* a tenant is **noisy** when it holds more than 10 % of the queue's in-flight messages
  *and* at least 30 of its own, **or** its share of recent consumer processing time is
  over 10 %;
* while some tenants are noisy, the oldest visible message of a quiet tenant is
  delivered first; noisy tenants' messages go only when no quiet tenant has one;
* a tenant stops being noisy as soon as neither rule holds (there is no hysteresis to
  model: AWS publishes none).

"Recent processing time" has no published window. It is modelled as an exponentially
weighted average of each tenant's in-flight count (processing time per unit of time)
with time constant ``recent_seconds`` (default 5 minutes, an assumption), against the
same average of the whole queue's in-flight count.

Within each tenant, and among tenants of the same class, delivery is oldest first.
Without fair queues (no message groups) the whole queue is oldest first and no tenant
is noisy. :class:`Delivery` chooses between the two for the worker simulator
(:mod:`.simulator`), which keeps one :class:`TenantQueue` per run.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "NOISY_MIN_IN_FLIGHT",
    "NOISY_SHARE",
    "OLDEST_FIRST",
    "Delivery",
    "TenantQueue",
]

NOISY_SHARE = 0.10
"""A tenant over this share of in-flight messages (with enough of them) or of recent
processing time is noisy."""
NOISY_MIN_IN_FLIGHT = 30
"""In-flight messages of its own a tenant needs for the in-flight rule to apply."""


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """SQS 2's delivery order for one simulation.

    Attributes:
        fair: fair queues (``MessageGroupId`` = tenant, ADR 0018) instead of plain
            oldest-first delivery.
        recent_seconds: time constant of fair queues' "recent processing time".
    """

    fair: bool = False
    recent_seconds: float = 300.0

    def queue(self) -> TenantQueue:
        """A fresh, empty queue delivering in this order."""
        return TenantQueue(fair=self.fair, recent_seconds=self.recent_seconds)


OLDEST_FIRST = Delivery()
"""A standard queue without message groups (the planner's default)."""


@dataclass(slots=True)
class _Ewma:
    """An exponentially weighted average of a piecewise-constant count, updated lazily."""

    value: float = 0.0
    at: float = 0.0

    def advance(self, now: float, count: int, tau: float) -> float:
        if now > self.at:
            keep = math.exp(-(now - self.at) / tau)
            self.value = count + (self.value - count) * keep
            self.at = now
        return self.value


class TenantQueue:
    """Visible messages by tenant, their in-flight counts, and who gets delivered next.

    Args:
        fair: ``True`` for fair-queue delivery, ``False`` for plain oldest-first.
        recent_seconds: time constant of the processing-time share.

    Messages are opaque integers (the caller's job indices). Without ``fair`` there is
    one group: in-flight counts are not kept (nobody is noisy), which keeps the
    planner's default runs as cheap as a plain deque.
    """

    def __init__(self, *, fair: bool, recent_seconds: float = 300.0) -> None:
        if recent_seconds <= 0:
            raise ValueError("recent_seconds must be > 0")
        self.fair = fair
        self.tau = recent_seconds
        # Visible messages per group (the tenant; one group "" without fair queues).
        self._visible: dict[str, deque[tuple[str, float, int]]] = {}
        # Fair: one entry per group with visible messages (its oldest visible time, seq,
        # group). Without fair queues the single group's deque is already in order.
        self._heads: list[tuple[float, int, str]] = []
        self._seq = 0
        self._in_flight: dict[str, int] = {}
        self._total_in_flight = 0
        self._busy: dict[str, _Ewma] = {}
        self._total_busy = _Ewma()
        self.visible = 0
        """Visible messages now."""

    def __len__(self) -> int:
        return self.visible

    # -- state changes ----------------------------------------------------------

    def push(self, tenant: str, visible_at: float, message: int) -> None:
        """``message`` of ``tenant`` becomes visible at ``visible_at`` (non-decreasing)."""
        group = tenant if self.fair else ""
        waiting = self._visible.get(group)
        if waiting is None:
            waiting = self._visible[group] = deque()
        if self.fair and not waiting:
            self._push_head(visible_at, group)
        waiting.append((tenant, visible_at, message))
        self.visible += 1

    def started(self, tenant: str, now: float) -> None:
        """A message of ``tenant`` was received (now in flight)."""
        if not self.fair:
            return
        self._advance(tenant, now)
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        self._total_in_flight += 1

    def finished(self, tenant: str, now: float) -> None:
        """A message of ``tenant`` in flight was deleted or released."""
        if not self.fair:
            return
        self._advance(tenant, now)
        self._in_flight[tenant] -= 1
        self._total_in_flight -= 1

    def pop(self, now: float) -> tuple[str, float, int] | None:
        """Deliver the next message: ``(tenant, visible_at, message)``, or ``None``."""
        if not self.fair:
            if not self.visible:
                return None
            self.visible -= 1
            return self._visible[""].popleft()
        if not self._heads:
            return None
        passed: list[tuple[float, int, str]] = []
        chosen: str | None = None
        while self._heads:
            entry = heapq.heappop(self._heads)
            if not self.is_noisy(entry[2], now):
                chosen = entry[2]
                break
            passed.append(entry)
        if chosen is None:
            # Only noisy tenants have messages: the oldest of them.
            chosen = passed.pop(0)[2]
        for entry in passed:
            heapq.heappush(self._heads, entry)
        return self._take(chosen)

    def oldest_visible_at(self) -> float | None:
        """When the oldest visible message became visible (``None``: none visible)."""
        if not self.fair:
            waiting = self._visible.get("")
            return waiting[0][1] if waiting else None
        return self._heads[0][0] if self._heads else None

    def messages(self) -> Iterator[int]:
        """Every visible message."""
        for waiting in self._visible.values():
            for _, _, message in waiting:
                yield message

    # -- the rules --------------------------------------------------------------

    def processing_share(self, tenant: str, now: float) -> float:
        """``tenant``'s share of recent processing time (0..1)."""
        mine = self._advance(tenant, now)
        total = self._total_busy.value
        return mine / total if total > 0 else 0.0

    def is_noisy(self, tenant: str, now: float) -> bool:
        """Whether SQS treats ``tenant`` as noisy now (see the module docstring)."""
        mine = self._in_flight.get(tenant, 0)
        if mine >= NOISY_MIN_IN_FLIGHT and mine > NOISY_SHARE * self._total_in_flight:
            return True
        return self.processing_share(tenant, now) > NOISY_SHARE

    def noisy_tenants(self, now: float) -> list[str]:
        """Every tenant that is noisy now (``ApproximateNumberOfNoisyGroups``)."""
        return [t for t in self._busy if self.is_noisy(t, now)]

    # -- internals --------------------------------------------------------------

    def _advance(self, tenant: str, now: float) -> float:
        self._total_busy.advance(now, self._total_in_flight, self.tau)
        ewma = self._busy.get(tenant)
        if ewma is None:
            ewma = self._busy[tenant] = _Ewma(at=now)
        return ewma.advance(now, self._in_flight.get(tenant, 0), self.tau)

    def _push_head(self, visible_at: float, tenant: str) -> None:
        self._seq += 1
        heapq.heappush(self._heads, (visible_at, self._seq, tenant))

    def _take(self, group: str) -> tuple[str, float, int]:
        # The group's heads entry is already popped; its next message becomes its head.
        waiting = self._visible[group]
        entry = waiting.popleft()
        self.visible -= 1
        if waiting:
            self._push_head(waiting[0][1], group)
        return entry
