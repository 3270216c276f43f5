"""Stalled-export detection: exports with no activity while files are still outstanding.

The orchestrator runs a :class:`StallWatcher`; every ``interval`` seconds it queries the
tracking table's sparse ``active`` index for exports idle longer than ``stall_seconds``,
logs each one, and publishes the count as the ``ExportsStalled`` metric (the CDK alarm
watches it). ``exportpipe status`` applies the same rule to one export.
"""

from __future__ import annotations

import threading
import time

from aws_lambda_powertools import Logger

from exportpipe.common.observability import Metrics
from exportpipe.common.tracking import ExportState, ExportTracker

__all__ = ["StallWatcher"]


class StallWatcher:
    """Periodically reports stalled exports as a log line each and a metric."""

    def __init__(
        self,
        tracker: ExportTracker,
        metrics: Metrics,
        logger: Logger,
        *,
        stall_seconds: float,
        interval: float = 300.0,
    ) -> None:
        self._tracker = tracker
        self._metrics = metrics
        self._log = logger
        self._stall_seconds = stall_seconds
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[ExportState]:
        """One check: log and count the stalled exports, and return them."""
        stalled = self._tracker.stalled(self._stall_seconds)
        for state in stalled:
            self._log.warning(
                "export stalled",
                extra={
                    "export_id": state.export_id,
                    "files_outstanding": state.files_outstanding,
                    "listing_complete": state.listing_complete,
                    "idle_seconds": round(time.time() - state.last_activity),
                },
            )
        self._metrics.add("ExportsStalled", len(stalled))
        return stalled

    def start(self) -> None:
        """Check every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="stall-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception as exc:  # a failed check must not take the service down
                self._log.warning("stall check failed", extra={"error": type(exc).__name__})
