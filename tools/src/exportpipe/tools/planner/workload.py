"""Export events for the simulation: a generated day, or a trace read from a CSV file.

A trace's columns (``time_s``, optional ``files`` and ``duration_s``) are docs/planner.md,
*Traces*.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from exportpipe.tools.planner.config import DAY_SECONDS, DurationModel, RunOptions, Workload

__all__ = ["EventStream", "TraceError", "draw_durations", "generate_day", "load_trace"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class TraceError(ValueError):
    """A trace file is missing, malformed, or holds impossible values."""


@dataclass(frozen=True, eq=False)
class EventStream:
    """Export events, the files each yields and every file's job duration.

    Attributes:
        times: event arrival times in seconds, ascending (negative = warm-up).
        files: download jobs per event.
        durations: one duration per job, in event order (event 0's files first).
        window: ``(start, end)`` of the measured window in seconds.
    """

    times: FloatArray
    files: IntArray
    durations: FloatArray
    window: tuple[float, float]

    @property
    def window_seconds(self) -> float:
        """Length of the measured window."""
        return self.window[1] - self.window[0]

    def in_window(self) -> tuple[int, int]:
        """Return ``(events, jobs)`` whose event arrives inside the measured window."""
        mask = (self.times >= self.window[0]) & (self.times < self.window[1])
        return int(mask.sum()), int(self.files[mask].sum())


def _rngs(seed: int) -> list[np.random.Generator]:
    # Independent streams per quantity: changing files/export does not move arrivals.
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def draw_durations(model: DurationModel, n: int, rng: np.random.Generator) -> FloatArray:
    """Draw ``n`` job durations in seconds from ``model``."""
    if model.kind == "exponential":
        return rng.exponential(model.mean_seconds, size=n)
    raw = rng.lognormal(mean=math.log(model.median_seconds), sigma=model.sigma, size=n)
    return np.clip(raw, model.min_seconds, model.max_seconds)


def _arrival_cdf(workload: Workload) -> tuple[FloatArray, FloatArray]:
    """Per-second grid over one day and the normalised cumulative rate on it."""
    curve = workload.arrivals
    grid = np.arange(DAY_SECONDS + 1, dtype=np.float64)
    c, a, bump, sigma_h = curve.shape_terms()
    hours = grid / 3600.0
    d = (hours - curve.peak_hour + 12.0) % 24.0 - 12.0
    rate = c * (1.0 + a * np.cos(2.0 * np.pi * d / 24.0)) + bump * np.exp(-0.5 * (d / sigma_h) ** 2)
    cdf = np.concatenate(([0.0], np.cumsum((rate[1:] + rate[:-1]) / 2.0)))
    return grid, cdf / cdf[-1]


def generate_day(workload: Workload, options: RunOptions) -> EventStream:
    """Generate the measured day plus ``options.warmup_days`` days before it.

    Each day holds exactly ``events_per_day`` events placed by inverse-CDF sampling of the
    arrival curve (a Poisson process conditioned on the day's count).
    """
    arrivals_rng, files_rng, durations_rng = _rngs(options.seed)
    grid, cdf = _arrival_cdf(workload)
    n = workload.arrivals.events_per_day
    days = []
    for day in range(-options.warmup_days, 1):
        u = np.sort(arrivals_rng.random(n))
        days.append(np.interp(u, cdf, grid) + day * DAY_SECONDS)
    times = np.concatenate(days) if days else np.zeros(0)
    files = files_rng.poisson(workload.files_per_export, size=times.size).astype(np.int64)
    durations = draw_durations(workload.durations, int(files.sum()), durations_rng)
    return EventStream(
        times=times, files=files, durations=durations, window=(0.0, float(DAY_SECONDS))
    )


def load_trace(path: Path, workload: Workload, options: RunOptions) -> EventStream:
    """Read a trace CSV; draw missing files and durations from ``workload``.

    The measured window runs from 0 to the end of the last event's hour, and at least a
    day. Traces get no warm-up.

    Raises:
        TraceError: the file is missing, has no ``time_s`` column, or holds a bad value.
    """
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from exc
    if not rows:
        raise TraceError(f"trace {path} has no events (expected a header and one row per event)")
    if "time_s" not in rows[0]:
        raise TraceError(f"trace {path} has no time_s column (columns: {sorted(rows[0])})")
    _, files_rng, durations_rng = _rngs(options.seed)
    times: list[float] = []
    files: list[int] = []
    given: list[float | None] = []
    for line, row in enumerate(rows, start=2):
        try:
            t = float(row["time_s"])
            k = (
                int(row["files"])
                if row.get("files") not in (None, "")
                else int(files_rng.poisson(workload.files_per_export))
            )
            d = float(row["duration_s"]) if row.get("duration_s") not in (None, "") else None
        except (TypeError, ValueError) as exc:
            raise TraceError(f"trace {path} line {line}: {exc}") from exc
        if not math.isfinite(t) or t < 0 or k < 0 or (d is not None and not d > 0):
            raise TraceError(
                f"trace {path} line {line}: need time_s >= 0, files >= 0, duration_s > 0"
            )
        times.append(t)
        files.append(k)
        given.append(d)
    order = np.argsort(np.asarray(times), kind="stable")
    t_arr = np.asarray(times, dtype=np.float64)[order]
    f_arr = np.asarray(files, dtype=np.int64)[order]
    drawn = draw_durations(workload.durations, int(f_arr.sum()), durations_rng)
    durations = np.empty_like(drawn)
    pos = 0
    for idx in order:
        k = files[idx]
        fixed = given[idx]
        durations[pos : pos + k] = drawn[pos : pos + k] if fixed is None else fixed
        pos += k
    # Hours the trace leaves empty are quiet, so a short trace (one burst) is measured over
    # a whole day: its drain and the fleet's scale-in are billed, and costs stay per day.
    end = max(float(DAY_SECONDS), math.floor(float(t_arr[-1]) / 3600.0 + 1.0) * 3600.0)
    return EventStream(times=t_arr, files=f_arr, durations=durations, window=(0.0, end))
