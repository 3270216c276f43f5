"""ECS task scale-in protection while the worker is busy.

The ECS agent exposes ``$ECS_AGENT_URI/task-protection/v1/state``; a task that set
``ProtectionEnabled`` is not chosen by service scale-in until the protection expires
(1 to 2,880 minutes) or is cleared. The worker enables it when its first job starts,
renews it while jobs keep running, and clears it when idle, so autoscaling never stops
a task in the middle of an hour-long download. (It does not protect from a Spot
reclaim; graceful shutdown handles that.)

Protection is never requested past ``deadline`` (the task's drain deadline, see
:mod:`exportpipe.worker.lifetime`): each request's ``ExpiresInMinutes`` is capped at
the minutes left, and after the deadline it is cleared even if jobs still run. A hung
process therefore cannot keep its task from a deployment or scale-in beyond the bound.

Calls are made on a background thread so that the consumer's busy hook never blocks a
job; outside ECS (no ``ECS_AGENT_URI``) this is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import urllib3

__all__ = ["TaskProtection"]


class TaskProtection:
    """Keeps ECS scale-in protection in step with the busy state.

    Args:
        agent_uri: the ``ECS_AGENT_URI`` value, or ``None`` outside ECS.
        minutes: protection length requested each time (renewed at half of it).
        logger: a logger for failures.
        retry_seconds: delay before retrying a failed or refused call.
        deadline: monotonic time after which no protection is held (``None``: none).
        clock: monotonic clock (tests).
    """

    def __init__(
        self,
        agent_uri: str | None,
        *,
        minutes: int,
        logger: Any = None,
        retry_seconds: float = 5.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = f"{agent_uri.rstrip('/')}/task-protection/v1/state" if agent_uri else None
        self._deadline = deadline
        self._clock = clock
        self._minutes = minutes
        self._retry_seconds = retry_seconds
        self._log = logger
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5), retries=False)
        self._wake = threading.Condition()
        self._busy = False
        self._applied = False
        self._stopping = False
        self.calls = 0
        self._thread: threading.Thread | None = None
        if self._url is not None:
            self._thread = threading.Thread(target=self._run, name="protection", daemon=True)
            self._thread.start()

    @classmethod
    def from_env(
        cls, *, minutes: int, logger: Any = None, deadline: float | None = None
    ) -> TaskProtection:
        """Built from ``ECS_AGENT_URI`` (no-op when it is absent)."""
        return cls(
            os.environ.get("ECS_AGENT_URI") or None,
            minutes=minutes,
            logger=logger,
            deadline=deadline,
        )

    def expires_in_minutes(self) -> int:
        """Minutes to request now: ``minutes``, capped at the deadline (at least 1)."""
        if self._deadline is None:
            return self._minutes
        left = math.floor((self._deadline - self._clock()) / 60)
        return max(1, min(self._minutes, left))

    def _past_deadline(self) -> bool:
        # Within a minute of it, a 1-minute request would already overshoot.
        return self._deadline is not None and self._deadline - self._clock() < 60

    @property
    def enabled(self) -> bool:
        """True when running under an ECS agent."""
        return self._url is not None

    def on_busy_change(self, busy: bool) -> None:
        """The consumer's hook: called with True when work starts, False when idle."""
        with self._wake:
            self._busy = busy
            self._wake.notify_all()

    def _put(self, enabled: bool) -> bool:
        if self._url is None:
            return True
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = self.expires_in_minutes()
        self.calls += 1
        try:
            resp = self._http.request(
                "PUT",
                self._url,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            self._warn("task protection call failed", error=type(exc).__name__)
            return False
        try:
            failure = json.loads(resp.data or b"{}").get("failure")
        except ValueError:
            failure = "unparseable response"
        if resp.status != 200 or failure:
            self._warn("task protection refused", status=resp.status, failure=str(failure)[:200])
            return False
        return True

    def _warn(self, message: str, **extra: Any) -> None:
        if self._log is not None:
            self._log.warning(message, extra=extra)

    def _run(self) -> None:
        renew_after = max(self._minutes * 60 / 2, 1.0)
        last_put = 0.0
        while True:
            with self._wake:
                while True:
                    want = self._busy and not self._stopping and not self._past_deadline()
                    due = want and self._clock() - last_put >= renew_after
                    if want != self._applied or due:
                        break
                    if self._stopping:
                        return
                    # Busy: wake up in time to renew (or to let go at the deadline).
                    # Idle: sleep until work starts.
                    timeout = None
                    if want:
                        timeout = renew_after - (self._clock() - last_put)
                        if self._deadline is not None:
                            timeout = min(timeout, self._deadline - 60 - self._clock())
                        timeout = max(timeout, 0.05)
                    self._wake.wait(timeout=timeout)
            if self._put(want):
                self._applied, last_put = want, self._clock()
            elif self._stopping:
                return  # protection expires on its own; do not hold up the exit
            else:
                with self._wake:
                    self._wake.wait(timeout=self._retry_seconds)

    def close(self) -> None:
        """Clear the protection (if set) and stop the background thread."""
        if self._thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=10)
