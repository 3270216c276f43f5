"""Cancellation that carries its reason down the data path.

The queue runtime owns one :class:`CancelToken` per job and cancels it with the error
that says *why* the job must stop::

    JobReleased          shutdown: the message is released for another consumer
    LeaseLost            the visibility could not be extended: someone else may hold it
    JobDeadlineExceeded  the job ran past EXPORTPIPE_MAX_JOB_SECONDS: dead-lettered

Every place on the data path that can stop (between reads, while backing off, while
waiting for a queue or an upload slot) calls :meth:`CancelToken.check` or sleeps with
:meth:`CancelToken.wait`, and so raises *that* error, not a generic "stop". A bare
``threading.Event`` lost the reason: a deadline used to surface as a release, and the
job restarted from byte 0 until SQS's redrive dropped it without a word.

A component that must stop its own helpers without cancelling the job (a prefetch
thread whose reader gave up) takes a :meth:`CancelToken.child`: cancelling the parent
cancels the child with the parent's reason, never the other way round.
"""

from __future__ import annotations

import copy
import threading

from exportpipe.common.errors import ExportPipeError

__all__ = ["CancelToken"]


class CancelToken:
    """A one-shot cancellation flag with the error that explains it (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._error: ExportPipeError | None = None
        self._children: list[CancelToken] = []

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (here or on a parent)."""
        return self._event.is_set()

    @property
    def reason(self) -> ExportPipeError | None:
        """The error :meth:`check` raises, or ``None`` while not cancelled."""
        return self._error

    def cancel(self, error: ExportPipeError) -> bool:
        """Cancel with ``error``; the first reason wins. Returns False if already cancelled."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
            children, self._children = self._children, []
            self._event.set()
        for child in children:
            child.cancel(error)
        return True

    def check(self) -> None:
        """Raise the cancellation error (a fresh copy per raise) if cancelled."""
        error = self._error
        if error is not None:
            # A copy, so that threads raising it at once do not share one traceback.
            raise copy.copy(error)

    def wait(self, timeout: float | None) -> bool:
        """Block up to ``timeout`` seconds; True as soon as the token is cancelled."""
        return self._event.wait(timeout)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise the cancellation error as soon as it happens."""
        if self._event.wait(max(0.0, seconds)):
            self.check()

    def child(self) -> CancelToken:
        """A token cancelled with this one (and with this one's reason), or on its own."""
        token = CancelToken()
        with self._lock:
            if self._error is None:
                self._children.append(token)
                return token
            error = self._error
        token.cancel(error)
        return token
