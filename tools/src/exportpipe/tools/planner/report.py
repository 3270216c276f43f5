"""Turn simulation runs into the planner's report: costs, waits, requests, checks.

:func:`policy_report` prices a policy's run with a :class:`PriceTable`;
:func:`format_report` renders the side-by-side text table; :meth:`PlanReport.to_json`
gives the same figures for machines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from exportpipe.common.sizing import Deployment, ServiceSizing
from exportpipe.tools.planner.fanout import FanoutResult
from exportpipe.tools.planner.prices import PriceTable
from exportpipe.tools.planner.simulator import WorkerRun
from exportpipe.tools.planner.workload import EventStream

__all__ = [
    "AnalysisCheck",
    "LoadSummary",
    "PlanReport",
    "PolicyReport",
    "analysis_check",
    "format_report",
    "offered_load",
    "policy_report",
]

ANALYSIS_CLAIMS = {
    "orchestrator_per_day": 3.0,
    "workers_base_per_day": 90.0,
    "workers_peak_per_day": 40.0,
    "total_per_day": 133.0,
    "total_with_spot_per_day": 60.0,
}
"""The analysis's own cost figures (architecture-options.md, Dimension 6, Two services)."""


@dataclass(frozen=True, kw_only=True)
class LoadSummary:
    """The offered load in the measured window, before any queueing.

    Attributes:
        events / jobs: export events and download jobs arriving in the window.
        job_hours: total job run time.
        mean_busy_slots: ``job_hours`` over the window's hours.
        peak_hour_busy_slots: the busiest clock hour's average busy slots if every job
            started the moment it arrived.
        peak_tasks_needed: tasks that keeps fully busy (``ceil(peak / jobs_per_task)``).
        slots_at_max: ``max_tasks * jobs_per_task``.
        jobs_per_task: ``Deployment.worker_jobs_per_task`` (admission by budget, ADR 0015).
        duration_percentiles: p50, p90, p99, max of job durations, seconds.
    """

    events: int
    jobs: int
    job_hours: float
    mean_busy_slots: float
    peak_hour_busy_slots: float
    peak_tasks_needed: int
    slots_at_max: int
    jobs_per_task: int
    duration_percentiles: tuple[float, float, float, float]


@dataclass(frozen=True, kw_only=True)
class PolicyReport:
    """One policy's figures for the window, costs scaled to a day."""

    name: str
    description: str
    worker_spot_task_hours: float
    worker_on_demand_task_hours: float
    peak_tasks: int
    orchestrator_task_hours: float
    sqs_requests: dict[str, int]
    cost_workers_spot: float
    cost_workers_on_demand: float
    cost_orchestrator: float
    cost_sqs: float
    cost_public_ipv4: float
    cost_container_insights: float
    cost_storage: float
    cost_requests: float
    cost_total: float
    cost_total_all_on_demand: float
    wait_mean: float
    wait_p50: float
    wait_p95: float
    wait_p99: float
    wait_max: float
    max_backlog: int
    spot_reclaims: int
    jobs_retried_spot: int
    jobs_retried_scale_in: int
    releases: int
    dead_lettered: int
    lost_slot_hours: float
    unfinished: int
    oldest_message_alarm_minutes: float
    scale_outs: int
    scale_ins: int
    sim_events: int
    sim_seconds: float
    series: dict[str, list[float]] = field(repr=False)
    # job-hours lost to releases by cause (spot, drain): (without, with resume)
    lost_job_hours: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AnalysisCheck:
    """The analysis's cost scenario recomputed with the price table."""

    claims: dict[str, float]
    orchestrator_per_day: float
    workers_base_per_day: float
    workers_peak_per_day: float
    total_per_day: float
    total_with_spot_per_day: float
    worker_task_hour: float
    slot_hours: float


@dataclass(frozen=True, kw_only=True)
class PlanReport:
    """Everything the planner prints, in one object."""

    seed: int
    source: str
    window_hours: float
    workload: dict[str, Any]
    deployment: dict[str, Any]
    prices: dict[str, float]
    price_sources: dict[str, str]
    load: LoadSummary
    policies: list[PolicyReport]
    analysis: AnalysisCheck
    orchestrator_max_backlog: int
    generate_seconds: float
    fanout_seconds: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (policy series included)."""
        return asdict(self)


def offered_load(stream: EventStream, fanout: FanoutResult, deployment: Deployment) -> LoadSummary:
    """Summarise the window's offered load, as if every job started on arrival."""
    w0, w1 = stream.window
    events, _ = stream.in_window()
    mask = (fanout.job_times >= w0) & (fanout.job_times < w1)
    starts = fanout.job_times[mask]
    durations = fanout.job_durations[mask]
    hours = stream.window_seconds / 3600.0
    job_hours = float(durations.sum()) / 3600.0
    peak = 0.0
    if starts.size:
        # Busy slot-seconds per clock hour: each job's [start, end) cut at hour bounds.
        edges = np.arange(w0, w1 + 3600.0, 3600.0)
        ends = starts + durations
        slot_seconds = np.zeros(edges.size - 1)
        for k in range(edges.size - 1):
            lo, hi = edges[k], edges[k + 1]
            slot_seconds[k] = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None).sum()
        peak = float(slot_seconds.max()) / 3600.0
    worker = deployment.worker
    pct = np.percentile(durations, [50, 90, 99, 100]) if durations.size else np.zeros(4)
    return LoadSummary(
        events=events,
        jobs=int(mask.sum()),
        job_hours=job_hours,
        mean_busy_slots=job_hours / hours if hours else 0.0,
        peak_hour_busy_slots=peak,
        peak_tasks_needed=math.ceil(peak / deployment.worker_jobs_per_task),
        slots_at_max=worker.max_tasks * deployment.worker_jobs_per_task,
        jobs_per_task=deployment.worker_jobs_per_task,
        duration_percentiles=(float(pct[0]), float(pct[1]), float(pct[2]), float(pct[3])),
    )


def analysis_check(prices: PriceTable, concurrency: int) -> AnalysisCheck:
    """The analysis's 'Two services' fleet priced with ``prices``, without simulation."""
    # The analysis's own task sizes: orchestrator 0.5 vCPU / 512 MB, worker 2 vCPU / 4 GB,
    # no extra ephemeral storage.
    orch = ServiceSizing(cpu_units=512, memory_mib=512, min_tasks=2, max_tasks=2)
    worker = ServiceSizing(cpu_units=2048, memory_mib=4096, min_tasks=0, max_tasks=65)
    orch_day = 2 * 24 * prices.task_hour(orch)
    rate = prices.task_hour(worker)
    base = 15 * 12 * rate
    peak = 50 * 4 * rate
    spot_rate = prices.task_hour(worker, spot=True)
    return AnalysisCheck(
        claims=dict(ANALYSIS_CLAIMS),
        orchestrator_per_day=orch_day,
        workers_base_per_day=base,
        workers_peak_per_day=peak,
        total_per_day=orch_day + base + peak,
        total_with_spot_per_day=orch_day + (15 * 12 + 50 * 4) * spot_rate,
        worker_task_hour=rate,
        slot_hours=(15 * 12 + 50 * 4) * concurrency,
    )


def policy_report(
    run: WorkerRun,
    *,
    description: str,
    fanout: FanoutResult,
    deployment: Deployment,
    prices: PriceTable,
    per_day: float,
) -> PolicyReport:
    """``run``'s figures, its costs at ``prices`` scaled by ``per_day`` to a day."""
    spot_h = run.spot_task_seconds / 3600.0
    od_h = run.on_demand_task_seconds / 3600.0
    orch_h = fanout.task_seconds / 3600.0
    sqs1, sqs2 = fanout.sqs1, run.sqs2
    requests = {
        "sends": sqs1.sends + fanout.sqs2_send_batches,
        "receives": sqs1.receives + sqs2.receives,
        "empty_receives": sqs1.empty_receives + sqs2.empty_receives,
        "deletes": sqs1.deletes + sqs2.deletes,
        "visibility_changes": sqs1.visibility_changes + sqs2.visibility_changes,
    }
    requests["total"] = sum(requests.values())
    requests["sqs1_total"] = sqs1.total
    requests["sqs2_total"] = sqs2.total + fanout.sqs2_send_batches
    worker_rate = prices.task_hour(deployment.worker)
    cost_spot = spot_h * prices.task_hour(deployment.worker, spot=True) * per_day
    cost_od = od_h * worker_rate * per_day
    cost_orch = orch_h * prices.task_hour(deployment.orchestrator) * per_day
    cost_sqs = prices.sqs(requests["total"]) * per_day
    # Beyond Fargate compute: every task's public IPv4 (tasks run in public subnets by
    # default), and Container Insights (which the scaling policies read).
    task_h = spot_h + od_h + orch_h
    cost_ipv4 = prices.public_ipv4(task_h) * per_day
    cost_ci = prices.container_insights(task_h * per_day, days=1.0)
    # Already inside the worker cost (task_hour); shown on its own line.
    cost_storage = (
        spot_h * prices.storage_hour(deployment.worker, spot=True)
        + od_h * prices.storage_hour(deployment.worker)
    ) * per_day
    extras = cost_ipv4 + cost_ci
    # S3 and DynamoDB requests per copied file (bench/small_files.py; ADR 0015).
    cost_requests = prices.file_requests(int(run.waits.size)) * per_day
    waits = run.waits
    pct = np.percentile(waits, [50, 95, 99]) if waits.size else np.zeros(3)
    return PolicyReport(
        name=run.policy,
        description=description,
        worker_spot_task_hours=spot_h,
        worker_on_demand_task_hours=od_h,
        peak_tasks=run.peak_tasks,
        orchestrator_task_hours=orch_h,
        sqs_requests=requests,
        cost_workers_spot=cost_spot,
        cost_workers_on_demand=cost_od,
        cost_orchestrator=cost_orch,
        cost_sqs=cost_sqs,
        cost_public_ipv4=cost_ipv4,
        cost_container_insights=cost_ci,
        cost_storage=cost_storage,
        cost_requests=cost_requests,
        cost_total=cost_spot + cost_od + cost_orch + cost_sqs + extras + cost_requests,
        cost_total_all_on_demand=(spot_h + od_h) * worker_rate * per_day
        + cost_orch
        + cost_sqs
        + extras
        + cost_requests,
        wait_mean=float(waits.mean()) if waits.size else 0.0,
        wait_p50=float(pct[0]),
        wait_p95=float(pct[1]),
        wait_p99=float(pct[2]),
        wait_max=float(waits.max()) if waits.size else 0.0,
        max_backlog=run.max_backlog,
        spot_reclaims=run.spot_reclaims,
        jobs_retried_spot=run.jobs_retried_spot,
        jobs_retried_scale_in=run.jobs_retried_scale_in,
        releases=run.releases,
        dead_lettered=run.dead_lettered,
        lost_slot_hours=run.lost_slot_seconds / 3600.0,
        # Reclaims are Spot's; every other release is a drain (scale-in, age, deployment).
        lost_job_hours={
            "spot": (
                run.lost_seconds.get("spot", 0.0) / 3600,
                run.lost_seconds_resumed.get("spot", 0.0) / 3600,
            ),
            "drain": (
                sum(v for k, v in run.lost_seconds.items() if k != "spot") / 3600,
                sum(v for k, v in run.lost_seconds_resumed.items() if k != "spot") / 3600,
            ),
        },
        unfinished=run.unfinished,
        oldest_message_alarm_minutes=run.oldest_alarm_periods
        * deployment.worker_scaling.metric_period_seconds
        / 60.0,
        scale_outs=sum(1 for a in run.actions if a.new > a.old),
        scale_ins=sum(1 for a in run.actions if a.new < a.old),
        sim_events=run.events,
        sim_seconds=run.wall_seconds,
        series=run.series,
    )


def fmt_duration(seconds: float) -> str:
    """``0 s``, ``42 s``, ``17 min``, ``3.4 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _lost(p: PolicyReport, cause: str) -> str:
    return "{:,.1f} / {:,.1f}".format(*p.lost_job_hours.get(cause, (0.0, 0.0)))


# The side-by-side table: one (label, cell of a policy) per row, in print order.
_ROWS: tuple[tuple[str, Callable[[PolicyReport], str]], ...] = (
    ("worker task-hours, Spot", lambda p: f"{p.worker_spot_task_hours:,.0f}"),
    ("worker task-hours, on-demand", lambda p: f"{p.worker_on_demand_task_hours:,.0f}"),
    ("peak worker tasks", lambda p: f"{p.peak_tasks}"),
    ("orchestrator task-hours", lambda p: f"{p.orchestrator_task_hours:,.0f}"),
    ("SQS sends (incl. batches)", lambda p: f"{p.sqs_requests['sends']:,}"),
    ("SQS receives (with messages)", lambda p: f"{p.sqs_requests['receives']:,}"),
    ("SQS empty receives (long polls)", lambda p: f"{p.sqs_requests['empty_receives']:,}"),
    ("SQS deletes", lambda p: f"{p.sqs_requests['deletes']:,}"),
    ("SQS visibility changes", lambda p: f"{p.sqs_requests['visibility_changes']:,}"),
    ("cost/day workers", lambda p: f"${p.cost_workers_spot + p.cost_workers_on_demand:,.2f}"),
    ("cost/day orchestrator", lambda p: f"${p.cost_orchestrator:,.2f}"),
    ("cost/day SQS", lambda p: f"${p.cost_sqs:,.2f}"),
    ("  of workers: ephemeral storage", lambda p: f"${p.cost_storage:,.2f}"),
    ("cost/day public IPv4", lambda p: f"${p.cost_public_ipv4:,.2f}"),
    ("cost/day Container Insights", lambda p: f"${p.cost_container_insights:,.2f}"),
    ("cost/day S3 + DynamoDB requests", lambda p: f"${p.cost_requests:,.2f}"),
    ("cost/day TOTAL", lambda p: f"${p.cost_total:,.2f}"),
    ("cost/day if all on-demand", lambda p: f"${p.cost_total_all_on_demand:,.2f}"),
    ("queue wait p50", lambda p: fmt_duration(p.wait_p50)),
    ("queue wait p95", lambda p: fmt_duration(p.wait_p95)),
    ("queue wait p99", lambda p: fmt_duration(p.wait_p99)),
    ("queue wait max", lambda p: fmt_duration(p.wait_max)),
    ("max backlog (visible SQS 2)", lambda p: f"{p.max_backlog:,}"),
    ("minutes oldest msg > alarm", lambda p: f"{p.oldest_message_alarm_minutes:,.0f}"),
    ("Spot reclaims", lambda p: f"{p.spot_reclaims}"),
    ("jobs retried after reclaim", lambda p: f"{p.jobs_retried_spot:,}"),
    ("jobs retried after scale-in", lambda p: f"{p.jobs_retried_scale_in:,}"),
    ("work lost to releases (slot-h)", lambda p: f"{p.lost_slot_hours:,.1f}"),
    ("job-h lost, reclaims: no resume / resume", lambda p: _lost(p, "spot")),
    ("job-h lost, drains: no resume / resume", lambda p: _lost(p, "drain")),
    ("jobs dead-lettered", lambda p: f"{p.dead_lettered}"),
    ("jobs unfinished at end", lambda p: f"{p.unfinished:,}"),
    ("scale-outs/scale-ins", lambda p: f"{p.scale_outs}/{p.scale_ins}"),
)


def format_report(report: PlanReport) -> str:
    """The text report: workload, offered load, side-by-side policies, analysis check."""
    wl = report.workload
    arr = wl["arrivals"]
    load = report.load
    worker = report.deployment["worker"]
    spread = "p50 {}, p90 {}, p99 {}, max {}".format(*map(fmt_duration, load.duration_percentiles))
    days = report.window_hours / 24.0
    span = "day" if abs(days - 1.0) < 1e-9 else f"{report.window_hours:g} h window"
    lines = [f"exportpipe plan (seed {report.seed}) - one simulated {span}, costs per day", ""]
    if report.source == "generated day":
        lines += [
            f"workload: {load.events:,} export events, peak {arr['peak_factor']:g}x mean at "
            f"{arr['peak_hour']:g}:00 UTC (FWHM {arr['peak_width_hours']:g} h); "
            f"{wl['files_per_export']:g} files/export -> {load.jobs:,} jobs",
            f"  durations {wl['durations']['kind']}: {spread}",
        ]
    else:
        lines += [
            f"workload: {report.source}: {load.events:,} export events -> {load.jobs:,} jobs",
            f"  durations: {spread}",
        ]
    lines += [
        f"  Spot reclaims {wl['spot_interruptions_per_hour']:g}/Spot task-hour; offered load "
        f"{load.job_hours:,.0f} job-hours = {load.mean_busy_slots:,.0f} busy slots on average, "
        f"{load.peak_hour_busy_slots:,.0f} in the peak hour (= {load.peak_tasks_needed} fully "
        f"busy tasks; max_tasks gives {load.slots_at_max} slots)",
        f"worker: {worker['cpu_units'] / 1024:g} vCPU / {worker['memory_mib'] / 1024:g} GiB / "
        f"{worker['ephemeral_storage_gib']} GiB disk, {load.jobs_per_task} jobs/task "
        "(by memory budget, at the scaling file size; ADR 0015), "
        f"{worker['min_tasks']}..{worker['max_tasks']} tasks, on-demand base "
        f"{worker['on_demand_base']}, rest Spot",
        "prices: ${vcpu_hour:g}/vCPU-h, ${gb_hour:g}/GB-h, ${storage_gb_hour:g}/GB-h disk over "
        "20 GB, Spot -{spot:.0%}, SQS ${sqs_per_million:g}/M, S3 ${s3_put_per_1000:g}/1,000 "
        "PUT-class + ${s3_get_per_1000:g}/1,000 GET-class, DynamoDB "
        "${dynamodb_wru_per_million:g}/M write units (us-east-1, taken "
        "2026-11-29; see docs/planner.md)".format(
            spot=report.prices["spot_discount"], **report.prices
        ),
        "",
    ]
    names = [p.name for p in report.policies]
    width = max(12, *(len(n) + 2 for n in names))
    label_w = max(len(label) for label, _ in _ROWS) + 2
    lines.append(" " * label_w + "".join(n.rjust(width) for n in names))
    for label, cell in _ROWS:
        lines.append(label.ljust(label_w) + "".join(cell(p).rjust(width) for p in report.policies))
    lines.append("")
    for p in report.policies:
        lines.append(f"  {p.name}: {p.description}")
    a = report.analysis
    c = a.claims
    lines += [
        "",
        "analysis check (architecture-options.md, 'Two services', own task sizes):",
        f"  claims:      orchestrator ${c['orchestrator_per_day']:.0f} + workers "
        f"${c['workers_base_per_day']:.0f} (15 x 12 h) + ${c['workers_peak_per_day']:.0f} "
        f"(50 x 4 h) = ${c['total_per_day']:.0f}/day; with Spot "
        f"${c['total_with_spot_per_day']:.0f}/day",
        f"  price table: orchestrator ${a.orchestrator_per_day:.2f} + workers "
        f"${a.workers_base_per_day:.2f} + ${a.workers_peak_per_day:.2f} = "
        f"${a.total_per_day:.2f}/day; with Spot ${a.total_with_spot_per_day:.2f}/day "
        f"(${a.worker_task_hour:.4f} per worker task-hour)",
        f"  capacity:    380 task-hours x {load.jobs_per_task} jobs = {a.slot_hours:,.0f} "
        f"slot-hours for {load.job_hours:,.0f} job-hours offered; the 'analysis' column "
        "simulates that schedule",
    ]
    perf = ", ".join(
        f"{p.name} {p.sim_seconds:.2f} s/{p.sim_events / 1000:.0f}k events" for p in report.policies
    )
    lines += [
        "",
        f"simulation: workload {report.generate_seconds:.2f} s, orchestrator "
        f"{report.fanout_seconds:.2f} s, workers: {perf}",
    ]
    return "\n".join(lines)
