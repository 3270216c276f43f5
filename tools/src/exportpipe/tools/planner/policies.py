"""Worker scaling policies the planner compares.

Each policy is a frozen description; :meth:`ScalingPolicy.controller` returns a fresh
stateful controller for one simulation run. Every metric period the simulator appends a
:class:`MetricSample` and asks the controller for the new desired count. Controllers see
only samples at least the metric delay old, as CloudWatch alarms do.

* :class:`ConfiguredPolicy`: ``exportpipe.common.sizing.WorkerScaling`` exactly (the
  policy the CDK stack deploys).
* :class:`CpuTargetPolicy`: ECS target tracking on average CPU, what a stock
  ``QueueProcessingFargateService`` adds; blind to backlog.
* :class:`QueueDepthPolicy`: the analysis's steps on visible SQS 2 messages.
* :class:`FixedFleet` / :class:`ScheduledFleet`: no autoscaling; the scheduled fleet
  reproduces the analysis's cost scenario.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar

from exportpipe.common.sizing import Deployment, ScalingStep, WorkerScaling

__all__ = [
    "ConfiguredPolicy",
    "Controller",
    "CpuTargetPolicy",
    "FixedFleet",
    "MetricSample",
    "QueueDepthPolicy",
    "ScalingPolicy",
    "ScheduledFleet",
    "percent_change",
]


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One metric period as CloudWatch records it.

    Attributes:
        time: end of the period (seconds).
        visible: SQS 2 ``ApproximateNumberOfMessagesVisible`` sampled at ``time``.
        in_flight: SQS 2 ``ApproximateNumberOfMessagesNotVisible`` (jobs being worked).
        running: ECS ``RunningTaskCount`` (started tasks, including ones draining).
        cpu: ECS average CPU utilisation over the period, 0..1, approximated as busy job
            slots over job slots of running tasks.
        desired: ECS ``DesiredTaskCount`` at ``time``.
    """

    time: float
    visible: int
    in_flight: int
    running: int
    cpu: float
    desired: int = 0


class Controller(Protocol):
    """One run's scaling state."""

    def decide(self, now: float, samples: Sequence[MetricSample], desired: int) -> int:
        """Return the desired task count after this metric period."""


class ScalingPolicy(Protocol):
    """A worker fleet policy: bounds, task protection and a controller factory."""

    @property
    def name(self) -> str:
        """Short column name for the report."""

    @property
    def description(self) -> str:
        """One line saying what the policy does."""

    @property
    def protect_busy(self) -> bool:
        """Whether busy workers hold ECS task scale-in protection."""

    def initial_tasks(self, start: float) -> int:
        """Tasks already running when the simulation starts."""

    def controller(self) -> Controller:
        """A fresh controller for one run."""


def percent_change(capacity: int, percent: float, min_magnitude: int = 0) -> int:
    """Application Auto Scaling's ``PercentChangeInCapacity`` adjustment, in tasks.

    A fractional result rounds toward zero, except that a result between -1 and 1 (not
    0) becomes -1 or 1; ``MinAdjustmentMagnitude`` then sets the smallest change (it also
    lets a fleet of 0 grow, where any percentage of 0 is 0).
    """
    raw = capacity * percent / 100.0
    if raw > 0:
        change = max(1, math.floor(raw))
    elif raw < 0:
        change = min(-1, math.ceil(raw))
    else:
        change = 0
    if percent > 0:
        return max(change, min_magnitude)
    if percent < 0 and min_magnitude:
        return min(change, -min_magnitude)
    return change


def _available(samples: Sequence[MetricSample], lag: int, count: int) -> list[MetricSample]:
    """The newest ``count`` samples an alarm can see ``lag`` periods late (or fewer)."""
    end = len(samples) - lag
    if end <= 0:
        return []
    return list(samples[max(0, end - count) : end])


@dataclass(frozen=True, kw_only=True)
class ConfiguredPolicy:
    """The deployed worker policy, read from :mod:`exportpipe.common.sizing`.

    Step scaling on the load ratio (visible + in-flight SQS 2 messages per task and job
    slot), scale-in below ``scale_in_below_ratio``, activation from zero tasks,
    and busy workers protected: what ``exportpipe.infra.backlog_scaling`` deploys, rule
    by rule in docs/planner.md, *The configured policy, exactly*.
    """

    deployment: Deployment = field(default_factory=Deployment)
    name: str = "configured"
    protect_busy: ClassVar[bool] = True  # the worker holds scale-in protection while busy

    @property
    def description(self) -> str:
        """One line for the report."""
        s = self.deployment.worker_scaling
        steps = ", ".join(f">={st.lower:g}: +{st.percent}%" for st in s.scale_out_steps)
        return (
            f"backlog/task ratio steps ({steps}, min +{s.scale_out_min_change}); "
            f"in {s.scale_in_percent}% below {s.scale_in_below_ratio:g} for "
            f"{s.scale_in_evaluation_periods} periods; protection on"
        )

    def initial_tasks(self, start: float) -> int:
        """Starts at the service minimum."""
        return self.deployment.worker.min_tasks

    def controller(self) -> Controller:
        """Fresh state."""
        return _ConfiguredController(self.deployment)


class _ConfiguredController:
    def __init__(self, deployment: Deployment) -> None:
        self.s: WorkerScaling = deployment.worker_scaling
        self.min = deployment.worker.min_tasks
        self.max = deployment.worker.max_tasks
        self.jobs_per_task = deployment.worker_jobs_per_task
        self.lag = math.ceil(self.s.metric_delay_seconds / self.s.metric_period_seconds)
        self.last_out = -math.inf
        self.cooldown_base = 0
        self.cooldown_change = 0
        self.last_in = -math.inf
        self.last_activation = -math.inf

    def ratio(self, m: MetricSample) -> float:
        # Tasks asked for count as capacity too (BacklogScaling): when they fail to
        # start, the percentage steps do not compound up to the maximum.
        return (m.visible + m.in_flight) / max(m.running, m.desired, 1) / self.jobs_per_task

    def step_for(self, ratio: float) -> ScalingStep | None:
        for step in self.s.scale_out_steps:
            if ratio >= step.lower and (step.upper is None or ratio < step.upper):
                return step
        return None

    def decide(self, now: float, samples: Sequence[MetricSample], desired: int) -> int:
        s = self.s
        new = desired
        latest = _available(samples, self.lag, 1)
        if not latest:
            return desired
        # Activation is its own policy on RunningTaskCount, not on the desired count: it
        # fires again each cooldown until a started task shows up in the late metric.
        if (
            latest[0].running < 1
            and latest[0].visible > 0
            and now - self.last_activation >= s.scale_out_cooldown_seconds
        ):
            new = desired + s.activation_tasks
            self.last_activation = now
        window = _available(samples, self.lag, s.scale_out_evaluation_periods)
        threshold = min(st.lower for st in s.scale_out_steps)
        breaching = len(window) == s.scale_out_evaluation_periods and all(
            self.ratio(m) >= threshold for m in window
        )
        step = self.step_for(self.ratio(latest[0])) if breaching else None
        if step is not None:
            if now - self.last_out >= s.scale_out_cooldown_seconds:
                change = percent_change(desired, step.percent, s.scale_out_min_change)
                new = max(new, desired + change)
                self.last_out, self.cooldown_base, self.cooldown_change = now, desired, change
            else:
                # In cooldown AAS applies only a larger adjustment, net of the one made.
                change = percent_change(self.cooldown_base, step.percent, s.scale_out_min_change)
                if change > self.cooldown_change:
                    new = max(new, self.cooldown_base + change)
                    self.cooldown_change = change
            return min(self.max, new)
        quiet = _available(samples, self.lag, s.scale_in_evaluation_periods)
        if (
            len(quiet) == s.scale_in_evaluation_periods
            and all(self.ratio(m) <= s.scale_in_below_ratio for m in quiet)
            and now - self.last_in >= s.scale_in_cooldown_seconds
            and desired > self.min
        ):
            new = desired + percent_change(desired, s.scale_in_percent)
            self.last_in = now
        return max(self.min, min(self.max, new))


@dataclass(frozen=True, kw_only=True)
class CpuTargetPolicy:
    """ECS target tracking on ``ECSServiceAverageCPUUtilization``.

    AAS's alarms: above target for 3 periods scales out, below 90% of target for 15
    periods scales in, each to ``ceil(desired * cpu / target)``, with ECS's default
    300-second cooldowns. With a job per slot the CPU proxy saturates at 100%, so a
    backlog of any size grows the fleet by at most ``100 / target`` per cooldown; and
    without protection, scale-in stops tasks still running jobs.
    """

    deployment: Deployment = field(default_factory=Deployment)
    target_percent: float = 70.0
    protected: bool = False
    out_periods: int = 3
    in_periods: int = 15
    cooldown_seconds: int = 300

    @property
    def name(self) -> str:
        """``cpu-70`` or ``cpu-70+prot``."""
        return f"cpu-{self.target_percent:g}" + ("+prot" if self.protected else "")

    @property
    def description(self) -> str:
        """One line for the report."""
        return f"CPU target tracking at {self.target_percent:g}% (min 1 task); protection " + (
            "on" if self.protected else "off: scale-in stops busy tasks"
        )

    @property
    def protect_busy(self) -> bool:
        """Configurable, to show what protection alone changes."""
        return self.protected

    def initial_tasks(self, start: float) -> int:
        """CPU of zero tasks is undefined: target tracking needs at least one."""
        return max(1, self.deployment.worker.min_tasks)

    def controller(self) -> Controller:
        """Fresh state."""
        return _CpuController(self)


_P = TypeVar("_P", "CpuTargetPolicy", "QueueDepthPolicy")


class _AlarmController(Generic[_P]):
    """State shared by the comparison policies: bounds, metric lag, cooldown clocks."""

    def __init__(self, policy: _P) -> None:
        self.p: _P = policy
        deployment = policy.deployment
        self.min = max(1, deployment.worker.min_tasks)
        self.max = deployment.worker.max_tasks
        s = deployment.worker_scaling
        self.lag = math.ceil(s.metric_delay_seconds / s.metric_period_seconds)
        self.last_out = -math.inf
        self.last_in = -math.inf


class _CpuController(_AlarmController[CpuTargetPolicy]):
    def decide(self, now: float, samples: Sequence[MetricSample], desired: int) -> int:
        target = self.p.target_percent / 100.0
        high = _available(samples, self.lag, self.p.out_periods)
        low = _available(samples, self.lag, self.p.in_periods)
        new = desired
        if (
            len(high) == self.p.out_periods
            and all(m.cpu > target for m in high)
            and now - self.last_out >= self.p.cooldown_seconds
        ):
            new = max(desired, math.ceil(desired * high[-1].cpu / target))
            if new > desired:
                self.last_out = now
        elif (
            len(low) == self.p.in_periods
            and all(m.cpu < 0.9 * target for m in low)
            and now - self.last_in >= self.p.cooldown_seconds
            and now - self.last_out >= self.p.cooldown_seconds
        ):
            new = min(desired, math.ceil(desired * low[-1].cpu / target))
            if new < desired:
                self.last_in = now
        return max(self.min, min(self.max, new))


@dataclass(frozen=True, kw_only=True)
class QueueDepthPolicy:
    """The analysis's queue-depth steps on visible SQS 2 messages.

    "If > 100 messages for 5 min -> scale up aggressively; if = 0 for 30 min -> slack":
    +``out_percent``% (at least ``out_min`` tasks) when visible stayed above
    ``threshold`` for ``out_periods``; -10% (at least one) when it stayed at 0 for
    ``in_periods``; 300-second cooldowns. Busy workers hold protection (our worker does
    this whatever the policy).
    """

    deployment: Deployment = field(default_factory=Deployment)
    threshold: int = 100
    out_periods: int = 5
    out_percent: int = 50
    out_min: int = 2
    in_periods: int = 30
    in_percent: int = -10
    cooldown_seconds: int = 300
    name: str = "queue-depth"
    protect_busy: ClassVar[bool] = True  # the worker holds protection

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"visible > {self.threshold} for {self.out_periods} min: +{self.out_percent}% "
            f"(min +{self.out_min}); = 0 for {self.in_periods} min: {self.in_percent}%; "
            "protection on"
        )

    def initial_tasks(self, start: float) -> int:
        """A visible-only metric never leaves zero below the threshold: min 1."""
        return max(1, self.deployment.worker.min_tasks)

    def controller(self) -> Controller:
        """Fresh state."""
        return _QueueDepthController(self)


class _QueueDepthController(_AlarmController[QueueDepthPolicy]):
    def decide(self, now: float, samples: Sequence[MetricSample], desired: int) -> int:
        p = self.p
        high = _available(samples, self.lag, p.out_periods)
        low = _available(samples, self.lag, p.in_periods)
        new = desired
        if (
            len(high) == p.out_periods
            and all(m.visible > p.threshold for m in high)
            and now - self.last_out >= p.cooldown_seconds
        ):
            new = desired + percent_change(desired, p.out_percent, p.out_min)
            self.last_out = now
        elif (
            len(low) == p.in_periods
            and all(m.visible == 0 for m in low)
            and now - self.last_in >= p.cooldown_seconds
        ):
            new = desired + percent_change(desired, p.in_percent)
            self.last_in = now
        return max(self.min, min(self.max, new))


def _clock(hour: float) -> str:
    minutes = round((hour % 24.0) * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class _Schedule:
    """A fleet set by the clock alone: stateless, so it is its own controller."""

    def tasks_at(self, now: float) -> int:
        """Tasks wanted at ``now`` (seconds)."""
        raise NotImplementedError

    def initial_tasks(self, start: float) -> int:
        """What the fleet wants at the start."""
        return self.tasks_at(start)

    def controller(self) -> Controller:
        """Itself: nothing to reset between runs."""
        return self

    def decide(self, now: float, samples: Sequence[MetricSample], desired: int) -> int:
        """What the clock says, whatever the metrics."""
        return self.tasks_at(now)


@dataclass(frozen=True, kw_only=True)
class FixedFleet(_Schedule):
    """A constant number of worker tasks all day; no autoscaling."""

    tasks: int
    name: str = "fixed"
    protect_busy: ClassVar[bool] = True  # irrelevant: nothing scales in

    @property
    def description(self) -> str:
        """One line for the report."""
        return f"{self.tasks} tasks all day"

    def tasks_at(self, now: float) -> int:
        """Always the same."""
        return self.tasks


@dataclass(frozen=True, kw_only=True)
class ScheduledFleet(_Schedule):
    """Worker tasks on a daily schedule of ``(start_hour, hours, tasks)`` windows.

    Windows add up where they overlap. At a window's end its tasks are stopped whether
    busy or not (scheduled scaling has no backlog signal; their jobs are released and
    retried), so the task-hours are exactly the schedule's.
    """

    windows: tuple[tuple[float, float, int], ...]
    name: str = "analysis"
    note: str = ""
    protect_busy: ClassVar[bool] = False  # a schedule stops what it stops

    @property
    def description(self) -> str:
        """One line for the report."""
        parts = [
            f"{n} tasks {_clock(start)}-{_clock(start + hours)}" for start, hours, n in self.windows
        ]
        return "schedule: " + ", ".join(parts) + (f" ({self.note})" if self.note else "")

    def tasks_at(self, now: float) -> int:
        """Tasks the schedule wants at ``now`` (seconds; the day repeats)."""
        hour = (now / 3600.0) % 24.0
        total = 0
        for start, hours, n in self.windows:
            if (hour - start) % 24.0 < hours:
                total += n
        return total

    @classmethod
    def analysis(cls, peak_hour: float) -> ScheduledFleet:
        """The analysis's 'Two services' scenario centred on the day's peak.

        15 tasks for 12 hours plus 50 more for the 4 peak hours (and, implicitly, no
        workers for the other 12 hours: that is what its $90 + $40 prices).
        """
        return cls(
            windows=((peak_hour - 6.0, 12.0, 15), (peak_hour - 2.0, 4.0, 50)),
            note="architecture-options.md, Two services",
        )
