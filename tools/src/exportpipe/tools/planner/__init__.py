"""Capacity and cost planner: simulate the worker scaling policy at production scale.

``exportpipe plan`` (or ``python -m exportpipe.tools.planner``) simulates a day of
export events through SQS 1, the orchestrator, SQS 2 and the worker fleet under the
policy in :mod:`exportpipe.common.sizing` and under alternatives, and reports task-hours,
SQS requests, cost per day and queue waits side by side. See ``docs/planner.md``.
"""

from exportpipe.tools.planner.command import main
from exportpipe.tools.planner.config import ArrivalCurve, DurationModel, RunOptions, Workload
from exportpipe.tools.planner.fairqueue import Delivery
from exportpipe.tools.planner.fanout import FanoutResult, SqsCounts, simulate_fanout
from exportpipe.tools.planner.plan import POLICY_KEYS, default_policies, run_plan
from exportpipe.tools.planner.policies import (
    ConfiguredPolicy,
    CpuTargetPolicy,
    FixedFleet,
    MetricSample,
    QueueDepthPolicy,
    ScalingPolicy,
    ScheduledFleet,
    percent_change,
)
from exportpipe.tools.planner.prices import PRICE_SOURCES, PriceTable
from exportpipe.tools.planner.report import PlanReport, PolicyReport, format_report, policy_report
from exportpipe.tools.planner.simulator import ScalingAction, WorkerRun, simulate_workers
from exportpipe.tools.planner.workload import EventStream, TraceError, generate_day, load_trace

__all__ = [
    "POLICY_KEYS",
    "PRICE_SOURCES",
    "ArrivalCurve",
    "ConfiguredPolicy",
    "CpuTargetPolicy",
    "Delivery",
    "DurationModel",
    "EventStream",
    "FanoutResult",
    "FixedFleet",
    "MetricSample",
    "PlanReport",
    "PolicyReport",
    "PriceTable",
    "QueueDepthPolicy",
    "RunOptions",
    "ScalingAction",
    "ScalingPolicy",
    "ScheduledFleet",
    "SqsCounts",
    "TraceError",
    "WorkerRun",
    "Workload",
    "default_policies",
    "format_report",
    "generate_day",
    "load_trace",
    "main",
    "percent_change",
    "policy_report",
    "run_plan",
    "simulate_fanout",
    "simulate_workers",
]
