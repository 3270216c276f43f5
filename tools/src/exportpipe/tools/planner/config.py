"""The planner's model of a day: arrival curve, fan-out, job durations, Spot behaviour.

Everything about the *deployment* (task sizes, queue timing, the worker scaling policy)
comes from :mod:`exportpipe.common.sizing`; this module only describes the *workload*
the deployment is asked to carry and how the simulation is run.

The defaults below are the day ``exportpipe plan`` simulates without options; why it
has 0.1 files per export (not one) is docs/planner.md, *The default day, and why*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ArrivalCurve",
    "DurationModel",
    "RunOptions",
    "Workload",
]

DAY_SECONDS = 86_400


@dataclass(frozen=True, kw_only=True)
class ArrivalCurve:
    """Export events per day and their shape over the day (UTC).

    The rate is a diurnal cosine (low at night, high around ``peak_hour``) plus a
    Gaussian peak centred on ``peak_hour``, scaled so that the day's mean is
    ``events_per_day / 24`` per hour and the highest rate is ``peak_factor`` times that.

    Attributes:
        events_per_day: export events (``ExportRequested``) in one day.
        peak_factor: highest instantaneous rate over the day's mean rate (>= 1).
        peak_hour: hour of the day (UTC) of the highest rate.
        peak_width_hours: full width at half maximum of the peak.
        diurnal_amplitude: relative swing of the cosine baseline (0 = flat baseline);
            capped at ``peak_factor - 1`` so the peak stays the day's maximum.
    """

    events_per_day: int = 100_000
    peak_factor: float = 5.0
    peak_hour: float = 14.0
    peak_width_hours: float = 2.0
    diurnal_amplitude: float = 0.5

    def __post_init__(self) -> None:
        if self.events_per_day < 0:
            raise ValueError(f"events_per_day must be >= 0, got {self.events_per_day}")
        if self.peak_factor < 1.0:
            raise ValueError(f"peak_factor must be >= 1 (peak over mean), got {self.peak_factor}")
        if self.peak_width_hours <= 0:
            raise ValueError(f"peak_width_hours must be > 0, got {self.peak_width_hours}")
        if self.diurnal_amplitude < 0:
            raise ValueError(f"diurnal_amplitude must be >= 0, got {self.diurnal_amplitude}")
        sigma_h = self.peak_width_hours / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        if self.peak_factor > 1.0 and sigma_h * math.sqrt(2 * math.pi) / 24 * self.peak_factor > 1:
            raise ValueError(
                f"a peak {self.peak_factor}x the mean cannot be {self.peak_width_hours} h wide: "
                "it would hold more than the whole day's events; narrow the peak"
            )

    def shape_terms(self) -> tuple[float, float, float, float]:
        """Return ``(c, a, bump, sigma_hours)``: rate/mean = c(1 + a cos) + bump * gauss."""
        a = min(self.diurnal_amplitude, self.peak_factor - 1.0)
        sigma_h = self.peak_width_hours / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        k = sigma_h * math.sqrt(2.0 * math.pi) / 24.0  # the bump's share of the day, per unit
        bump = (self.peak_factor - 1.0 - a) / (1.0 - k * (1.0 + a))
        c = 1.0 - bump * k
        return c, a, bump, sigma_h

    def relative_rate(self, hour: float) -> float:
        """Rate at ``hour`` (0..24, UTC) relative to the day's mean rate."""
        c, a, bump, sigma_h = self.shape_terms()
        d = (hour - self.peak_hour + 12.0) % 24.0 - 12.0  # signed distance, wrapping midnight
        return c * (1.0 + a * math.cos(2.0 * math.pi * d / 24.0)) + bump * math.exp(
            -0.5 * (d / sigma_h) ** 2
        )


@dataclass(frozen=True, kw_only=True)
class DurationModel:
    """How long one download job runs on a worker slot, from receive to delete.

    Attributes:
        kind: ``lognormal`` (heavy tail; the default) or ``exponential`` (memoryless,
            for checking the simulator against M/M/c theory).
        median_seconds / sigma: the log-normal's median and shape.
        mean_seconds: the exponential's mean.
        min_seconds / max_seconds: clip bounds for the log-normal (a job cannot run
            past SQS's 12-hour visibility ceiling anyway).
    """

    kind: Literal["lognormal", "exponential"] = "lognormal"
    median_seconds: float = 300.0
    sigma: float = 1.0
    mean_seconds: float = 600.0
    min_seconds: float = 60.0
    max_seconds: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.kind not in ("lognormal", "exponential"):
            raise ValueError(f"unknown duration kind {self.kind!r}")
        if min(self.median_seconds, self.mean_seconds) <= 0 or self.sigma < 0:
            raise ValueError("duration median, mean must be > 0 and sigma >= 0")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 <= min_seconds <= max_seconds")

    def describe(self) -> str:
        """One line for the report."""
        if self.kind == "exponential":
            return f"exponential, mean {self.mean_seconds / 60:.1f} min"
        return (
            f"log-normal, median {self.median_seconds / 60:.1f} min, sigma {self.sigma:.2f}, "
            f"clipped to {self.min_seconds / 60:.0f} min .. {self.max_seconds / 3600:.0f} h"
        )


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A day of export events and the work they fan out to.

    Attributes:
        arrivals: the export-event arrival curve.
        files_per_export: mean download jobs per export event (Poisson; may be < 1).
        files_per_page: files the Export API returns per page (the orchestrator walks one
            page per SQS 1 message and sends that page's jobs in batches of 10).
        page_seconds: orchestrator time per page (Export API call + batch sends).
        durations: job-duration distribution.
        spot_interruptions_per_hour: Fargate Spot reclaims per Spot task-hour. AWS
            publishes no Fargate Spot rate; 0.01 (one reclaim per 100 Spot task-hours) is
            an assumption, pessimistic next to the EC2 Spot advisor's lowest bucket.
    """

    arrivals: ArrivalCurve = field(default_factory=ArrivalCurve)
    files_per_export: float = 0.1
    files_per_page: int = 100
    page_seconds: float = 1.0
    durations: DurationModel = field(default_factory=DurationModel)
    spot_interruptions_per_hour: float = 0.01

    def __post_init__(self) -> None:
        if self.files_per_export < 0:
            raise ValueError(f"files_per_export must be >= 0, got {self.files_per_export}")
        if self.files_per_page < 1:
            raise ValueError(f"files_per_page must be >= 1, got {self.files_per_page}")
        if self.page_seconds <= 0:
            raise ValueError(f"page_seconds must be > 0, got {self.page_seconds}")
        if self.spot_interruptions_per_hour < 0:
            raise ValueError("spot_interruptions_per_hour must be >= 0")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How the simulation is run.

    Attributes:
        seed: one seed for everything random (arrivals, files, durations, Spot reclaims,
            which unprotected task a scale-in stops); the same seed gives the same report.
        warmup_days: simulated days before the measured one, so the measured day starts
            with the fleet and backlog a previous day leaves behind (0 for a trace).
        drain_seconds: how long after the measured window the simulation keeps running so
            the window's jobs can finish (their waits count; task-hours do not).
    """

    seed: int = 1
    warmup_days: int = 1
    drain_seconds: float = 2 * DAY_SECONDS

    def __post_init__(self) -> None:
        if self.warmup_days < 0 or self.drain_seconds < 0:
            raise ValueError("warmup_days and drain_seconds must be >= 0")
