"""One planner run: events -> orchestrator -> every policy's worker fleet -> report."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment
from exportpipe.tools.planner.config import DAY_SECONDS, RunOptions, Workload
from exportpipe.tools.planner.fanout import simulate_fanout
from exportpipe.tools.planner.policies import (
    ConfiguredPolicy,
    CpuTargetPolicy,
    FixedFleet,
    QueueDepthPolicy,
    ScalingPolicy,
    ScheduledFleet,
)
from exportpipe.tools.planner.prices import PRICE_SOURCES, PriceTable
from exportpipe.tools.planner.report import (
    LoadSummary,
    PlanReport,
    analysis_check,
    offered_load,
    policy_report,
)
from exportpipe.tools.planner.simulator import simulate_workers
from exportpipe.tools.planner.workload import generate_day, load_trace

__all__ = ["POLICY_KEYS", "default_policies", "run_plan"]

POLICY_KEYS = ("configured", "cpu", "cpu-protected", "queue-depth", "fixed", "analysis")
"""Policy keys ``--policies`` accepts, in report order."""

FIXED_FLEET_UTILISATION = 0.8
"""The default fixed fleet is sized for the peak hour at this slot utilisation."""


def default_policies(
    deployment: Deployment,
    load: LoadSummary,
    *,
    peak_hour: float,
    cpu_target: float = 70.0,
    fixed_tasks: int | None = None,
    keys: Sequence[str] = POLICY_KEYS,
) -> list[ScalingPolicy]:
    """The policies to compare, in ``keys`` order.

    Raises:
        ValueError: an unknown key.
    """
    if fixed_tasks is None:
        busy_tasks = load.peak_hour_busy_slots / deployment.worker_jobs_per_task
        fixed_tasks = max(1, math.ceil(busy_tasks / FIXED_FLEET_UTILISATION))
    make: dict[str, Callable[[], ScalingPolicy]] = {
        "configured": lambda: ConfiguredPolicy(deployment=deployment),
        "cpu": lambda: CpuTargetPolicy(deployment=deployment, target_percent=cpu_target),
        "cpu-protected": lambda: CpuTargetPolicy(
            deployment=deployment, target_percent=cpu_target, protected=True
        ),
        "queue-depth": lambda: QueueDepthPolicy(deployment=deployment),
        "fixed": lambda: FixedFleet(tasks=fixed_tasks, name=f"fixed-{fixed_tasks}"),
        "analysis": lambda: ScheduledFleet.analysis(peak_hour),
    }
    if not keys:
        raise ValueError(f"no policies chosen; choose from {', '.join(POLICY_KEYS)}")
    unknown = [k for k in keys if k not in make]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(POLICY_KEYS)}")
    return [make[k]() for k in keys]


def run_plan(
    workload: Workload,
    options: RunOptions,
    prices: PriceTable,
    *,
    deployment: Deployment = DEFAULT_DEPLOYMENT,
    trace: Path | None = None,
    policy_keys: Sequence[str] = POLICY_KEYS,
    cpu_target: float = 70.0,
    fixed_tasks: int | None = None,
) -> PlanReport:
    """Simulate the day (or ``trace``) under every policy and build the report."""
    began = time.perf_counter()
    stream = (
        load_trace(trace, workload, options)
        if trace is not None
        else generate_day(workload, options)
    )
    generated = time.perf_counter()
    fanout = simulate_fanout(stream, deployment, workload)
    fanned = time.perf_counter()
    load = offered_load(stream, fanout, deployment)
    policies = default_policies(
        deployment,
        load,
        peak_hour=workload.arrivals.peak_hour,
        cpu_target=cpu_target,
        fixed_tasks=fixed_tasks,
        keys=policy_keys,
    )
    per_day = DAY_SECONDS / stream.window_seconds
    reports = [
        policy_report(
            simulate_workers(
                fanout.job_times,
                fanout.job_durations,
                policy,
                deployment,
                window=stream.window,
                spot_interruptions_per_hour=workload.spot_interruptions_per_hour,
                seed=options.seed,
                drain_seconds=options.drain_seconds,
            ),
            description=policy.description,
            fanout=fanout,
            deployment=deployment,
            prices=prices,
            per_day=per_day,
        )
        for policy in policies
    ]
    return PlanReport(
        seed=options.seed,
        source=f"trace {trace}" if trace is not None else "generated day",
        window_hours=stream.window_seconds / 3600.0,
        workload=asdict(workload),
        deployment=asdict(deployment),
        prices=asdict(prices),
        price_sources=dict(PRICE_SOURCES),
        load=load,
        policies=reports,
        analysis=analysis_check(prices, deployment.worker_jobs_per_task),
        orchestrator_max_backlog=fanout.max_backlog,
        generate_seconds=generated - began,
        fanout_seconds=fanned - generated,
    )
