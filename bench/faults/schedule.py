"""The seeded fault schedule: what is injected, when, with which parameters.

:func:`build_schedule` draws every event from ``random.Random(seed)`` before anything
starts, so the same seed (and the same ``--files``, ``--workers``, ``--duration`` and
``--kinds``) always prints the same schedule. What the system does in response -- which
job a kill lands on, how many retries a burst costs -- depends on thread timing and is
not reproducible; the must-be-zero figures must hold for every run regardless.

Event kinds, by family (``KINDS`` gives the number of events per 100 s of schedule; each
kind gets at least one):

* processes: ``worker_kill`` / ``worker_term`` (SIGKILL / SIGTERM one worker, start a
  replacement ``restart_after`` seconds later), ``orchestrator_kill`` /
  ``orchestrator_term`` (same for the orchestrator, while it is still listing);
  ``worker_kill_mid_part`` / ``worker_kill_mid_checkpoint`` (traps, armed at ``at``:
  the next worker to send a part upload / a checkpoint write is SIGKILLed while the
  request is held, which then lands or not, ``landed`` / ``when``; see
  :mod:`bench.faults.traps`);
* Export API (scripted simulator faults, each applying to the next ``times`` matching
  requests): ``api_429`` (with ``Retry-After``), ``api_5xx`` bursts, ``slow_pages``,
  ``download_drop`` (the next download of a large file is cut at ``at`` of its length,
  mid-transfer), ``truncated_bodies`` (the next downloads stop at half their length);
* queues (sent straight to the moto server): ``duplicate_jobs`` (the same ``DownloadJob``
  sent twice more), ``garbage_requests`` / ``garbage_jobs`` (one of each malformed or
  hostile body of :data:`GARBAGE_REQUESTS` / :data:`GARBAGE_JOBS`, in a seeded order, on
  SQS 1 / SQS 2), ``wrong_version_requests`` / ``wrong_version_jobs``;
* AWS (the fault proxy between the services and moto, for ``seconds``, hitting each
  matching request with ``probability``): ``s3_reset``, ``s3_lost_response``,
  ``s3_500``, ``s3_slowdown``, ``sqs_reset``, ``sqs_lost_response``, ``sqs_500``,
  ``sqs_throttle``, ``sqs_batch_partial``, ``dynamodb_throttle``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "Event", "build_schedule", "format_schedule"]

KINDS: dict[str, float] = {
    "worker_kill": 3,
    "worker_term": 2,
    "orchestrator_kill": 1,
    "orchestrator_term": 1,
    "api_429": 2,
    "api_5xx": 2,
    "slow_pages": 2,
    "download_drop": 2,
    "truncated_bodies": 2,
    "duplicate_jobs": 3,
    "garbage_requests": 2,
    "garbage_jobs": 3,
    "wrong_version_requests": 1,
    "wrong_version_jobs": 1,
    "s3_reset": 1,
    "s3_lost_response": 1,
    "s3_500": 1,
    "s3_slowdown": 2,
    "sqs_reset": 1,
    "sqs_lost_response": 1,
    "sqs_500": 1,
    "sqs_throttle": 2,
    "sqs_batch_partial": 1,
    "dynamodb_throttle": 1,
    # Last, so that adding them left the earlier kinds' draws (and schedules) unchanged.
    "worker_kill_mid_part": 1,
    "worker_kill_mid_checkpoint": 1,
}

GARBAGE_REQUESTS = ("not_json", "json_array", "bad_export_id", "download_job", "unknown_export")
GARBAGE_JOBS = (
    "not_json",
    "json_array",
    "missing_fields",
    "export_requested",
    "job_id_mismatch",
    "foreign_bucket",
    "escaping_prefix",
)
_START = 2.0


@dataclass(frozen=True, order=True)
class Event:
    """One scheduled fault.

    Attributes:
        at: seconds after the export was submitted.
        kind: one of :data:`KINDS`.
        params: the kind's parameters (see the module docstring).
    """

    at: float
    kind: str
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """``kind k=v ...`` on one line."""
        args = " ".join(f"{k}={_show(v)}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {args}".rstrip()


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _params(
    kind: str, rng: random.Random, *, workers: int, large: list[str], good: list[str]
) -> dict[str, Any]:
    if kind in ("worker_kill", "worker_term"):
        return {"slot": rng.randrange(workers), "restart_after": round(rng.uniform(0.5, 3), 1)}
    if kind == "worker_kill_mid_part":
        return {"restart_after": round(rng.uniform(0.5, 3), 1), "landed": rng.random() < 0.5}
    if kind == "worker_kill_mid_checkpoint":
        return {
            "restart_after": round(rng.uniform(0.5, 3), 1),
            "when": rng.choice(("during", "after")),
        }
    if kind in ("orchestrator_kill", "orchestrator_term"):
        return {"restart_after": round(rng.uniform(0.5, 3), 1)}
    if kind == "api_429":
        return {
            "route": rng.choice(("listing", "download", "download")),
            "retry_after": rng.choice((1, 2)),
            "times": rng.randint(1, 3),
        }
    if kind == "api_5xx":
        return {
            "route": rng.choice(("listing", "download", "download")),
            "status": rng.choice((500, 502, 503)),
            "times": rng.randint(2, 5),
        }
    if kind == "slow_pages":
        return {"delay": round(rng.uniform(1, 4), 1), "times": rng.randint(1, 3)}
    if kind == "download_drop":
        return {"file_id": rng.choice(large), "at": round(rng.uniform(0.1, 0.9), 2)}
    if kind == "truncated_bodies":
        return {"times": rng.randint(1, 4)}
    if kind == "duplicate_jobs":
        return {"file_ids": sorted(rng.sample(good, min(3, len(good))))}
    if kind == "garbage_requests":
        return {"variants": rng.sample(GARBAGE_REQUESTS, len(GARBAGE_REQUESTS))}
    if kind == "garbage_jobs":
        return {"variants": rng.sample(GARBAGE_JOBS, len(GARBAGE_JOBS))}
    if kind in ("wrong_version_requests", "wrong_version_jobs"):
        return {"version": rng.choice((2, 3, 99))}
    # An AWS fault window.
    return {"seconds": round(rng.uniform(2, 6), 1), "probability": round(rng.uniform(0.15, 0.4), 2)}


def build_schedule(
    seed: int,
    *,
    duration: float,
    listing_seconds: float,
    workers: int,
    large: list[str],
    files: list[str],
    kinds: list[str] | None = None,
) -> list[Event]:
    """Every event of a run, in time order (see the module docstring).

    Args:
        seed: the run's seed.
        duration: events fall in ``[2 s, duration]`` after submission.
        listing_seconds: orchestrator events, listing faults and slow pages fall in
            ``[2 s, min(listing_seconds, duration)]``, while there are pages to list.
        workers: worker slots a process event may target.
        large: ids of large files (``download_drop`` targets).
        files: ids of the files duplicate jobs may be sent for.
        kinds: only these kinds (default: all of :data:`KINDS`).

    Raises:
        ValueError: an unknown kind, or a duration too short to schedule anything.
    """
    chosen = list(KINDS) if kinds is None else kinds
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(unknown)}")
    if duration <= _START + 1:
        raise ValueError(f"--duration must be more than {_START + 1:g} s")
    rng = random.Random(f"faults:{seed}")
    events: list[Event] = []
    for kind in chosen:
        count = max(1, round(KINDS[kind] * duration / 100))
        for _ in range(count):
            params = _params(kind, rng, workers=workers, large=large, good=files)
            listing = kind.startswith("orchestrator") or kind == "slow_pages"
            end = (
                min(listing_seconds, duration)
                if listing or params.get("route") == "listing"
                else duration
            )
            at = round(rng.uniform(_START, max(_START + 1, end)), 1)
            events.append(Event(at, kind, params))
    events.sort()
    return events


def format_schedule(events: list[Event]) -> str:
    """The schedule, one event per line."""
    return "\n".join(f"  t={e.at:6.1f}s  {e.describe()}" for e in events)
