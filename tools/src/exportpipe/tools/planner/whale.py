"""``exportpipe plan whale``: one tenant's huge export against everyone else's day.

The scenario of issue 20 and ADR 0018 (its four runs, the target, what is left out) is
docs/planner.md, *Scenario: a whale export and fair queues*. Beyond that page: the
orchestrator is not simulated; it lists ``files_per_page`` files per ``page_seconds``
per export, one export's pages in sequence.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment
from exportpipe.tools.planner.command import DEFAULT_OUT, option, publish
from exportpipe.tools.planner.config import DAY_SECONDS, ArrivalCurve, DurationModel
from exportpipe.tools.planner.fairqueue import Delivery
from exportpipe.tools.planner.plot import stacked_axes
from exportpipe.tools.planner.policies import ConfiguredPolicy
from exportpipe.tools.planner.report import fmt_duration
from exportpipe.tools.planner.simulator import simulate_workers
from exportpipe.tools.planner.workload import FloatArray, draw_durations

__all__ = [
    "TARGET_FACTOR",
    "WHALE",
    "WhaleReport",
    "WhaleRun",
    "WhaleScenario",
    "format_whale",
    "main",
    "run_whale",
]

WHALE = "whale"
"""The whale tenant's name (small tenants are ``t00``, ``t01``, ...)."""
TARGET_FACTOR = 2.0
"""Issue 20's target: small tenants' p95 wait with fair queues within 2x a whale-free day."""


@dataclass(frozen=True, kw_only=True)
class WhaleScenario:
    """The whale day.

    Attributes:
        small_tenants: tenants with ordinary exports.
        exports_per_tenant: exports each small tenant submits in the day.
        files_per_export: mean files of a small export (Poisson, at least 1).
        whale_files: files of the whale's export.
        whale_hour: when (UTC hour of the day) the whale submits it.
        files_per_page / page_seconds: the orchestrator's listing pace per export.
        arrivals: the shape of the small tenants' day (only its shape is used).
        durations: job durations (the planner's default day).
        recent_seconds: time constant of fair queues' "recent processing time".
        seed: one seed for every draw.
    """

    small_tenants: int = 50
    exports_per_tenant: int = 8
    files_per_export: float = 25.0
    whale_files: int = 200_000
    whale_hour: float = 10.0
    files_per_page: int = 100
    page_seconds: float = 1.0
    arrivals: ArrivalCurve = field(default_factory=ArrivalCurve)
    durations: DurationModel = field(default_factory=DurationModel)
    recent_seconds: float = 300.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.small_tenants < 1 or self.exports_per_tenant < 1:
            raise ValueError("need at least one small tenant with at least one export")
        if self.files_per_export <= 0 or self.whale_files < 0:
            raise ValueError("files_per_export must be > 0 and whale_files >= 0")
        if not 0 <= self.whale_hour < 24:
            raise ValueError(f"whale_hour must be within the day (0..24), got {self.whale_hour}")
        if self.files_per_page < 1 or self.page_seconds <= 0:
            raise ValueError("files_per_page must be >= 1 and page_seconds > 0")


@dataclass(frozen=True, eq=False)
class _Jobs:
    """Every job of a run: visible time, tenant index and duration, by visible time."""

    visible: FloatArray
    tenant: np.ndarray[Any, np.dtype[np.int64]]
    duration: FloatArray
    names: tuple[str, ...]


def _listed(submitted: float, files: int, scenario: WhaleScenario) -> FloatArray:
    """When each file of an export submitted at ``submitted`` lands on SQS 2."""
    pages = np.arange(files) // scenario.files_per_page
    return np.asarray(submitted + (pages + 1) * scenario.page_seconds, dtype=np.float64)


def _jobs(scenario: WhaleScenario, *, whale: bool) -> _Jobs:
    rng_times, rng_files, rng_durations, rng_whale = (
        np.random.default_rng(s) for s in np.random.SeedSequence(scenario.seed).spawn(4)
    )
    # Inverse-CDF sampling of the day's arrival curve (only its shape matters here).
    grid = np.arange(DAY_SECONDS + 1, dtype=np.float64)
    rate = np.array([scenario.arrivals.relative_rate(h) for h in grid[::60] / 3600.0])
    cdf = np.concatenate(([0.0], np.cumsum((rate[1:] + rate[:-1]) / 2.0)))
    minutes = grid[::60]
    n_exports = scenario.small_tenants * scenario.exports_per_tenant
    submitted = np.interp(rng_times.random(n_exports), cdf / cdf[-1], minutes)
    files = np.maximum(1, rng_files.poisson(scenario.files_per_export, size=n_exports))
    owners = np.repeat(np.arange(scenario.small_tenants), scenario.exports_per_tenant)
    visible = [_listed(t, int(f), scenario) for t, f in zip(submitted, files, strict=True)]
    tenant = [np.full(int(f), o, dtype=np.int64) for o, f in zip(owners, files, strict=True)]
    names = (*(f"t{i:02d}" for i in range(scenario.small_tenants)), WHALE)
    small_durations = draw_durations(scenario.durations, int(files.sum()), rng_durations)
    durations = [small_durations]
    if whale and scenario.whale_files:
        visible.append(_listed(scenario.whale_hour * 3600.0, scenario.whale_files, scenario))
        tenant.append(np.full(scenario.whale_files, len(names) - 1, dtype=np.int64))
        # The whale's durations come from their own stream: the small tenants' day is
        # the same draw with and without it.
        durations.append(draw_durations(scenario.durations, scenario.whale_files, rng_whale))
    all_visible = np.concatenate(visible)
    order = np.argsort(all_visible, kind="stable")
    return _Jobs(
        visible=all_visible[order],
        tenant=np.concatenate(tenant)[order],
        duration=np.concatenate(durations)[order],
        names=names,
    )


@dataclass(eq=False)
class WhaleRun:
    """One run's outcome.

    Attributes:
        name: the column name.
        fair: whether fair-queue delivery was modelled.
        small_waits: queue wait of every small tenant's job, seconds.
        whale_done: when the whale's last file finished (seconds from midnight), or
            ``None`` without a whale.
        whale_first_start: when the first whale file started.
        task_hours: worker task-hours from midnight until the last job finished.
        peak_tasks: most worker tasks at once.
        series: per metric period: ``hour``, ``tasks``, ``visible``, ``whale_visible``,
            ``noisy`` (noisy tenants).
        hourly_p95: per hour of the day (0..23), the p95 wait of small tenants' jobs
            that became visible in that hour, seconds (``nan`` for an hour without any).
        sim_seconds: wall time of the simulation.
    """

    name: str
    fair: bool
    small_waits: FloatArray
    whale_done: float | None
    whale_first_start: float | None
    task_hours: float
    peak_tasks: int
    series: dict[str, list[float]]
    hourly_p95: list[float]
    sim_seconds: float

    def wait_percentile(self, q: float) -> float:
        """The ``q``-th percentile of small tenants' waits (100: the longest; 0 without jobs)."""
        return float(np.percentile(self.small_waits, q)) if self.small_waits.size else 0.0

    def summary(self) -> dict[str, Any]:
        """Figures for the JSON report."""
        return {
            "name": self.name,
            "fair": self.fair,
            "small_jobs": int(self.small_waits.size),
            "small_wait_p50_s": self.wait_percentile(50),
            "small_wait_p95_s": self.wait_percentile(95),
            "small_wait_p99_s": self.wait_percentile(99),
            "small_wait_max_s": self.wait_percentile(100),
            "whale_done_s": self.whale_done,
            "whale_first_start_s": self.whale_first_start,
            "task_hours": self.task_hours,
            "peak_tasks": self.peak_tasks,
            "sim_seconds": self.sim_seconds,
        }


def _run(jobs: _Jobs, *, delivery: Delivery, deployment: Deployment, name: str) -> WhaleRun:
    """Run ``jobs`` through SQS 2 and a fleet under the configured scaling policy."""
    whale = jobs.tenant == len(jobs.names) - 1
    run = simulate_workers(
        jobs.visible,
        jobs.duration,
        ConfiguredPolicy(deployment=deployment),
        deployment,
        window=(0.0, math.inf),  # from midnight until the last job is done
        start=0.0,
        drain_after_seconds=math.inf,  # no Spot reclaims, drains or retries: see above
        delivery=delivery,
        tenants=[jobs.names[i] for i in jobs.tenant.tolist()],
    )
    # Whale messages visible at each period's end (exact times): arrived, not received.
    periods = len(run.series["hour"])
    ticks = np.arange(1, periods + 1) * float(deployment.worker_scaling.metric_period_seconds)
    whale_visible = np.searchsorted(jobs.visible[whale], ticks, side="right") - np.searchsorted(
        np.sort(run.first_receives[whale]), ticks, side="right"
    )
    small = run.waits[~whale]
    hour_of = np.minimum(jobs.visible[~whale] // 3600, 23)
    hourly = [
        float(np.percentile(small[hour_of == h], 95)) if np.any(hour_of == h) else math.nan
        for h in range(24)
    ]
    return WhaleRun(
        name=name,
        fair=delivery.fair,
        small_waits=small,
        whale_done=float(run.ends[whale].max()) if whale.any() else None,
        whale_first_start=float(run.first_receives[whale].min()) if whale.any() else None,
        task_hours=(run.spot_task_seconds + run.on_demand_task_seconds) / 3600.0,
        peak_tasks=run.peak_tasks,
        series={
            "hour": run.series["hour"],
            "tasks": run.series["tasks"],
            "visible": run.series["visible"],
            "whale_visible": whale_visible.astype(np.float64).tolist(),
            "noisy": run.series.get("noisy", [0.0] * periods),
        },
        hourly_p95=hourly,
        sim_seconds=run.wall_seconds,
    )


@dataclass(eq=False)
class WhaleReport:
    """The four runs and the target check."""

    scenario: WhaleScenario
    runs: list[WhaleRun]
    small_jobs: int
    small_job_hours: float

    def run(self, name: str) -> WhaleRun:
        """The run called ``name``."""
        (found,) = [r for r in self.runs if r.name == name]
        return found

    @property
    def target_p95_seconds(self) -> float:
        """``TARGET_FACTOR`` x the small tenants' p95 wait on the whale-free fair day."""
        return TARGET_FACTOR * self.run("no whale, fair").wait_percentile(95)

    @property
    def target_met(self) -> bool:
        """Small tenants' p95 with the whale and fair queues is within the target."""
        return self.run("whale, fair").wait_percentile(95) <= self.target_p95_seconds

    def to_json(self) -> dict[str, Any]:
        """Every figure, the scenario and the per-period series."""
        return {
            "scenario": asdict(self.scenario),
            "small_jobs": self.small_jobs,
            "small_job_hours": self.small_job_hours,
            "target_factor": TARGET_FACTOR,
            "target_p95_s": self.target_p95_seconds,
            "target_met": self.target_met,
            "runs": [
                {
                    **r.summary(),
                    "series": r.series,
                    # JSON has no NaN: an hour in which no small job arrived is null.
                    "hourly_p95_s": [None if math.isnan(v) else v for v in r.hourly_p95],
                }
                for r in self.runs
            ],
        }


def run_whale(scenario: WhaleScenario, deployment: Deployment = DEFAULT_DEPLOYMENT) -> WhaleReport:
    """Simulate the four runs of ``scenario``."""
    plain, whale = _jobs(scenario, whale=False), _jobs(scenario, whale=True)
    runs = [
        _run(
            jobs,
            delivery=Delivery(fair=fair, recent_seconds=scenario.recent_seconds),
            deployment=deployment,
            name=f"{label}{', fair' if fair else ''}",
        )
        for label, jobs in (("no whale", plain), ("whale", whale))
        for fair in (False, True)
    ]
    return WhaleReport(
        scenario=scenario,
        runs=runs,
        small_jobs=len(plain.visible),
        small_job_hours=float(plain.duration.sum()) / 3600.0,
    )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    day, rest = divmod(int(seconds), DAY_SECONDS)
    stamp = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return stamp if day == 0 else f"day {day + 1} {stamp}"


def format_whale(report: WhaleReport) -> str:
    """The side-by-side text table."""
    sc = report.scenario
    whale_at = sc.whale_hour * 3600.0
    lines = [
        f"exportpipe plan whale (seed {sc.seed}) - fair sharing between tenants on SQS 2",
        "",
        f"small tenants: {sc.small_tenants} x {sc.exports_per_tenant} exports of ~"
        f"{sc.files_per_export:g} files over the day -> {report.small_jobs:,} jobs, "
        f"{report.small_job_hours:,.0f} job-hours",
        f"whale: {sc.whale_files:,} files at {_clock(whale_at)} UTC; durations "
        f"{sc.durations.describe()}",
        "fair queues: noisy = >10% of in-flight with >=30 own, or >10% of recent processing "
        f"time ({sc.recent_seconds:g} s average); quiet tenants first",
        "",
    ]
    names = [r.name for r in report.runs]
    width = max(16, *(len(n) + 2 for n in names))
    head = f"{'':<30}" + "".join(f"{n:>{width}}" for n in names)
    lines.append(head)
    lines.append("-" * len(head))

    def row(label: str, values: list[str]) -> None:
        lines.append(f"{label:<30}" + "".join(f"{v:>{width}}" for v in values))

    runs = report.runs
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99"), (100, "max")):
        row(f"small tenants' wait {name}", [fmt_duration(r.wait_percentile(q)) for r in runs])
    row("whale's first file starts", [_clock(r.whale_first_start) for r in runs])
    row("whale's last file done", [_clock(r.whale_done) for r in runs])
    row(
        "whale's completion time",
        [fmt_duration(r.whale_done - whale_at) if r.whale_done is not None else "-" for r in runs],
    )
    row("worker task-hours", [f"{r.task_hours:,.0f}" for r in runs])
    row("peak worker tasks", [str(r.peak_tasks) for r in runs])
    fair_p95 = report.run("whale, fair").wait_percentile(95)
    lines += [
        "",
        f"target: small tenants' p95 wait with the whale and fair queues "
        f"({fmt_duration(fair_p95)}) within {TARGET_FACTOR:g}x their p95 on a day without "
        f"it ({fmt_duration(report.target_p95_seconds / TARGET_FACTOR)} -> "
        f"{fmt_duration(report.target_p95_seconds)}): "
        f"{'MET' if report.target_met else 'NOT MET'}",
    ]
    return "\n".join(lines)


def render_whale_png(report: WhaleReport, path: Path) -> Path:
    """Small tenants' p95 wait over the day, and the fleet and whale backlog, per run."""
    with stacked_axes(path, 3, figsize=(11, 11)) as (ax_w, ax_q, ax_t):
        styles = {"no whale": ":", "no whale, fair": "--", "whale": "-", "whale, fair": "-"}
        for r in report.runs:
            hours = r.series["hour"]
            ax_w.step(
                [h + 0.5 for h in range(24)],
                [max(v / 60.0, 0.05) for v in r.hourly_p95],
                where="mid",
                ls=styles.get(r.name, "-"),
                label=f"{r.name}: p95 {fmt_duration(r.wait_percentile(95))} over the day",
                lw=1.5,
            )
            if r.whale_done is not None:
                ax_q.plot(hours, [max(v, 0.8) for v in r.series["whale_visible"]], label=r.name)
            ax_t.plot(hours, r.series["tasks"], label=r.name, lw=1.0)
        sc = report.scenario
        for ax in (ax_w, ax_q, ax_t):
            ax.axvline(sc.whale_hour, color="grey", ls=":", lw=1)
            ax.grid(True, alpha=0.3)
        ax_w.set_yscale("log")
        ax_w.set_xlim(0, 24)
        ax_w.set_xlabel("hour the small tenants' jobs were submitted (UTC)")
        ax_w.set_ylabel("small tenants' p95 wait (min)")
        ax_w.set_title(
            f"exportpipe plan whale, seed {sc.seed}: {sc.small_tenants} small tenants, "
            f"whale of {sc.whale_files:,} files at {sc.whale_hour:g}:00"
        )
        ax_w.legend(loc="upper left", fontsize=8)
        ax_q.set_yscale("log")
        ax_q.set_ylabel("whale's visible messages")
        ax_q.legend(loc="upper right", fontsize=8)
        ax_q.sharex(ax_t)
        ax_t.set_ylabel("worker tasks")
        ax_t.set_xlabel("hours from midnight UTC")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The scenario's options; defaults come from :class:`WhaleScenario`."""
    d = WhaleScenario()
    p = argparse.ArgumentParser(
        prog="exportpipe plan whale",
        description=(
            "One tenant's huge export against everyone else's day: small tenants' queue "
            "waits and the whale's completion, with and without SQS fair queues; writes "
            "whale.json and whale.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    option(p, "--seed", d.seed)
    option(p, "--small-tenants", d.small_tenants)
    option(p, "--exports-per-tenant", d.exports_per_tenant)
    option(p, "--files-per-export", d.files_per_export)
    option(p, "--whale-files", d.whale_files)
    option(p, "--whale-hour", d.whale_hour, "UTC hour of submission")
    option(
        p,
        "--recent-seconds",
        d.recent_seconds,
        "averaging time of fair queues' recent processing-time share (an assumption)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the scenario; exit 0, or 2 on bad options. Prints the table, writes files."""
    options = vars(build_parser().parse_args(argv))
    out, no_plot = options.pop("out"), options.pop("no_plot")
    try:
        report = run_whale(WhaleScenario(**options))  # every other option names a field
    except ValueError as exc:
        print(f"exportpipe plan whale: error: {exc}", file=sys.stderr)
        return 2
    render = None if no_plot else partial(render_whale_png, report)
    return publish(out, "whale", format_whale(report), report.to_json(), render)
