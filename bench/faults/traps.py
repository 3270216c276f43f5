"""Kill traps: a worker SIGKILLed while its part upload or checkpoint write is on the wire.

A timed kill (``worker_kill``) lands wherever the worker happens to be, mostly between
requests. The resume path (ADR 0020) has two moments a timed kill almost never hits,
and that a Spot reclaim or an OOM kill can: in the middle of an ``UploadPart``, and in
the middle of (or right after) the ``PutObject`` of the job's checkpoint. A trap is armed
by a schedule event and springs on the next matching request any worker sends through
the fault proxy: the proxy holds that request for :data:`HOLD` seconds, the run kills
the sender meanwhile (:meth:`KillTraps.sprung` tells it whom), then the proxy either
drops the request or forwards it to S3 after its sender is dead:

``worker_kill_mid_part``
    ``landed=False``: the part never reaches S3; ``landed=True``: it does, but no
    attempt knows it (the next attempt finds a part its checkpoint does not name).
``worker_kill_mid_checkpoint``
    ``when=during``: the checkpoint write never lands (the previous checkpoint, if any,
    stays); ``when=after``: it lands as the worker dies, so the next thing the worker
    would have done -- its next part -- never happens (a kill between checkpoint and
    part).

The sender is told by its access key: each worker slot runs with its own
(:func:`worker_access_key`; the moto server maps unknown keys to its default account,
so every worker still sees the same bucket and queues).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from exportpipe.testing import Fault, Request

__all__ = ["HOLD", "TRAPS", "KillTraps", "Sprung", "worker_access_key", "worker_slot"]

TRAPS = ("worker_kill_mid_part", "worker_kill_mid_checkpoint")
HOLD = 2.0
"""Seconds the trapped request is held: the run's loop (every 50 ms) kills well within."""

_KEY_PREFIX = "FAULTSWORKER"
_CREDENTIAL = re.compile(r"Credential=" + _KEY_PREFIX + r"(\d+)/")


def worker_access_key(slot: int) -> str:
    """The AWS access key id worker slot ``slot`` runs with."""
    return f"{_KEY_PREFIX}{slot}"


def worker_slot(request: Request) -> int | None:
    """The worker slot that signed ``request`` (``None``: not a worker's request)."""
    auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
    match = _CREDENTIAL.search(auth)
    return int(match.group(1)) if match else None


def _is_part(request: Request) -> bool:
    return request.method == "PUT" and "partNumber=" in request.path and "uploadId=" in request.path


def _is_checkpoint(request: Request) -> bool:
    key = request.path.split("?", 1)[0]
    return request.method == "PUT" and "/checkpoints/" in key and key.endswith(".json")


_MATCHES = {"worker_kill_mid_part": _is_part, "worker_kill_mid_checkpoint": _is_checkpoint}


@dataclass(frozen=True)
class Sprung:
    """A trap that caught a request: kill ``slot``'s worker now."""

    kind: str
    params: dict[str, Any]
    slot: int
    request: str  # the request's method and key, for the run's log

    def describe(self) -> str:
        """One line for the run's log."""
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {shown}: SIGKILL worker slot {self.slot} during {self.request}"


class KillTraps:
    """The proxy rule holding armed traps (thread-safe: the proxy calls it per request)."""

    def __init__(self, hold: float = HOLD) -> None:
        self._hold = hold
        self._lock = threading.Lock()
        self._armed: list[tuple[str, dict[str, Any]]] = []
        self._sprung: list[Sprung] = []

    def arm(self, kind: str, params: dict[str, Any]) -> None:
        """Catch the next request of ``kind``'s sort from any worker."""
        if kind not in _MATCHES:
            raise ValueError(f"not a trap kind: {kind!r}")
        with self._lock:
            self._armed.append((kind, dict(params)))

    def armed(self) -> list[str]:
        """Kinds of the traps still waiting (not reached by the end of a run)."""
        with self._lock:
            return [kind for kind, _ in self._armed]

    def disarm(self) -> None:
        """Drop every waiting trap (the run is over)."""
        with self._lock:
            self._armed.clear()

    def sprung(self) -> list[Sprung]:
        """Traps that caught a request since the last call (their senders to kill)."""
        with self._lock:
            out, self._sprung = self._sprung, []
        return out

    def __call__(self, request: Request) -> Fault | None:
        """The rule the proxy consults for each request."""
        with self._lock:
            if not self._armed:
                return None
            slot = worker_slot(request)
            if slot is None:
                return None
            for i, (kind, params) in enumerate(self._armed):
                if _MATCHES[kind](request):
                    del self._armed[i]
                    what = f"{request.method} {request.path.split('?', 1)[0]}"
                    self._sprung.append(Sprung(kind, params, slot, what))
                    lands = bool(params.get("landed")) or params.get("when") == "after"
                    # Held while the run kills the sender; then forwarded (it lands,
                    # unanswered) or dropped.
                    return Fault(delay=self._hold, drop_response=lands, reset=not lands)
        return None
