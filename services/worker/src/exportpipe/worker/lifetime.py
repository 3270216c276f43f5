"""A worker task's bounded lifetime: drain at a maximum age.

A busy worker holds ECS task scale-in protection, and a loaded worker is always busy:
without a bound, a deployment (which also waits for protected tasks) or a scale-in
could wait for ever. After ``drain_after`` the task takes the same graceful-shutdown
path as on SIGTERM, with a longer grace: it stops receiving, lets running jobs finish
for up to ``drain_grace``, releases what is left (visibility 0, another task picks it
up), flushes deletes, clears its protection and exits 0. ECS then starts a replacement
if the service still wants the task, or not if it was surplus.

So a task is protected for at most :attr:`TaskLifetime.deadline` - start (the sizing
module's ``release_bound_minutes``), and :class:`~exportpipe.worker.protection.TaskProtection`
never asks ECS for protection beyond it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["TaskLifetime"]

_RELEASE_MARGIN_SECONDS = 60.0


class TaskLifetime:
    """Drains the consumer once the task is ``drain_after_seconds`` old.

    Created before the consumer (scale-in protection needs :attr:`protection_deadline`);
    :meth:`start` takes the consumer's ``shutdown(grace_seconds=..., reason=...)``.

    Args:
        drain_after_seconds: the task's maximum age before it drains.
        drain_grace_seconds: how long running jobs may then finish.
        logger: where the drain is announced.
        clock: monotonic clock (tests).
    """

    def __init__(
        self,
        *,
        drain_after_seconds: float,
        drain_grace_seconds: float,
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shutdown: Callable[..., None] | None = None
        self._drain_after = drain_after_seconds
        self._grace = drain_grace_seconds
        self._log = logger
        self.started = clock()
        self.deadline = self.started + drain_after_seconds + drain_grace_seconds
        """Monotonic time by which the task has released everything (plus the release
        wait): protection is never requested past ``deadline + 60 s``."""
        self.protection_deadline = self.deadline + _RELEASE_MARGIN_SECONDS
        self._timer = threading.Timer(drain_after_seconds, self.drain)
        self._timer.daemon = True
        self._timer.name = "lifetime"
        self.drained = threading.Event()

    def start(self, shutdown: Callable[..., None]) -> TaskLifetime:
        """Arm the timer to call ``shutdown`` at the maximum age; returns ``self``."""
        self._shutdown = shutdown
        self._timer.start()
        return self

    def drain(self) -> None:
        """Begin draining now (the timer calls this at the maximum age)."""
        if self._log is not None:
            self._log.info(
                "task reached its maximum age; draining",
                extra={
                    "age_seconds": round(self._drain_after),
                    "grace_seconds": round(self._grace),
                },
            )
        self.drained.set()
        if self._shutdown is not None:
            self._shutdown(grace_seconds=self._grace, reason="max_age")

    def cancel(self) -> None:
        """Disarm the timer (the consumer stopped for another reason)."""
        self._timer.cancel()
