"""Per-source politeness: how hard one worker process leans on one download host.

A worker process runs several jobs at once, and with fair queues (ADR 0018) those jobs
often belong to different tenants whose files sit on the *same* vendor host. Two rules
keep the process a good citizen of that host, shared by every job in the process:

* **a cap on concurrent downloads per host** (``EXPORTPIPE_MAX_DOWNLOADS_PER_HOST``): a
  download holds one of its host's slots from its first request until its body is read
  (or it is abandoned); a job over the cap waits for a slot, still cancellable;
* **a host that says "slow down" is slowed for everyone**: a ``429``, or a ``503`` with
  ``Retry-After``, pauses the host for the whole process until the time it asked for
  (clamped to :attr:`HostPoliteness.max_pause_seconds`; a bare ``429`` gets
  :attr:`HostPoliteness.default_pause_seconds`). Until then no job of this process
  sends that host a request: a short pause is waited out in place; a longer one
  releases the job at once with :class:`~exportpipe.common.errors.RateLimited`
  carrying the time left, which the queue runtime turns into a redelivery delay, so a
  worker slot is not held idle for minutes.

Hosts are keyed by lower-cased host name (ports and schemes of one host share it):
politeness is about the server, not the URL.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import RateLimited
from exportpipe.common.retry import parse_retry_after

__all__ = ["HostPoliteness", "parse_retry_after"]

_SLOW_DOWN = frozenset({429, 503})


class HostPoliteness:
    """Per-host download slots and pauses, shared by every job of one worker process.

    Thread-safe. Args:
        max_per_host: downloads one process runs against one host at once.
        inline_wait_seconds: a pause at most this long is waited out in place; a
            longer one releases the job (``RateLimited`` with the time left).
        max_pause_seconds: the longest pause a host can impose (SQS's longest
            redelivery delay: a host asking for more is retried then, not ignored).
        default_pause_seconds: the pause after a ``429`` without ``Retry-After``.
        clock: monotonic seconds (tests move it).
    """

    def __init__(
        self,
        *,
        max_per_host: int,
        inline_wait_seconds: float = 30.0,
        max_pause_seconds: float = 900.0,
        default_pause_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_host < 1:
            raise ValueError(f"max_per_host must be >= 1, got {max_per_host}")
        self.max_per_host = max_per_host
        self.inline_wait_seconds = inline_wait_seconds
        self.max_pause_seconds = max_pause_seconds
        self.default_pause_seconds = default_pause_seconds
        self._clock = clock
        self._lock = threading.Condition()
        self._active: dict[str, int] = {}
        self._paused_until: dict[str, float] = {}
        self.pauses = 0
        """Pauses imposed so far (for metrics and tests)."""

    @staticmethod
    def key(host: str | None) -> str:
        """The politeness key of ``host`` (lower-cased, without a trailing dot)."""
        return (host or "").lower().rstrip(".")

    # -- concurrency ----------------------------------------------------------

    def acquire(self, host: str | None, cancel: CancelToken | None = None) -> None:
        """Take one of ``host``'s download slots, waiting while all are in use.

        Raises:
            ExportPipeError: ``cancel`` was cancelled while waiting (its reason).
        """
        key = self.key(host)
        with self._lock:
            while self._active.get(key, 0) >= self.max_per_host:
                if cancel is not None:
                    cancel.check()
                # Wake regularly: a cancelled job must not wait for another to finish.
                self._lock.wait(0.2)
            self._active[key] = self._active.get(key, 0) + 1

    def release(self, host: str | None) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        key = self.key(host)
        with self._lock:
            left = self._active.get(key, 0) - 1
            if left > 0:
                self._active[key] = left
            else:
                self._active.pop(key, None)
            self._lock.notify_all()

    def active(self, host: str | None) -> int:
        """Downloads holding a slot of ``host`` now."""
        with self._lock:
            return self._active.get(self.key(host), 0)

    # -- pauses ---------------------------------------------------------------

    def note_response(self, host: str | None, status: int, headers: Mapping[str, str]) -> float:
        """Record a response's "slow down": returns the pause imposed (0 if none).

        A ``429`` (with or without ``Retry-After``) or a ``503`` *with* ``Retry-After``
        pauses the host; a bare ``503`` is an outage, retried by the download itself.
        """
        if status not in _SLOW_DOWN:
            return 0.0
        asked = parse_retry_after(headers.get("Retry-After"))
        if asked is None:
            if status != 429:
                return 0.0
            asked = self.default_pause_seconds
        pause = min(asked, self.max_pause_seconds)
        key = self.key(host)
        with self._lock:
            until = self._clock() + pause
            if until > self._paused_until.get(key, 0.0):
                self._paused_until[key] = until
            self.pauses += 1
        return pause

    def paused_for(self, host: str | None) -> float:
        """Seconds left of ``host``'s pause (0 when it may be contacted)."""
        key = self.key(host)
        with self._lock:
            until = self._paused_until.get(key)
            if until is None:
                return 0.0
            left = until - self._clock()
            if left <= 0:
                del self._paused_until[key]
                return 0.0
            return left

    def before_request(self, host: str | None, cancel: CancelToken) -> None:
        """Wait out ``host``'s pause, or release the job if the pause is long.

        Raises:
            RateLimited: the pause has more than ``inline_wait_seconds`` left
                (``retry_after`` = the time left, reason ``host_paused``).
            ExportPipeError: ``cancel`` was cancelled while waiting (its reason).
        """
        while (left := self.paused_for(host)) > 0:
            if left > self.inline_wait_seconds:
                raise RateLimited(
                    f"download host {self.key(host)} asked to slow down; "
                    f"{left:.0f} s of its pause left",
                    reason="host_paused",
                    retry_after=math.ceil(left),
                )
            cancel.sleep(left)
