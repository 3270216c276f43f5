"""Sizing, queue timing and scaling policy: the one source of truth.

The CDK stacks (``exportpipe.infra``) build task definitions, queues and autoscaling
from these values, the services take their runtime defaults from them, and the capacity
planner (``exportpipe plan``) simulates exactly this policy. Change a number here and
all three move together.

The worker scales on *backlog per task*: ``(visible + in-flight messages on SQS 2) /
max(running tasks, 1)``, divided by ``jobs_per_task`` to give a load ratio (1.0 means
every job slot busy and nothing waiting). Counting in-flight messages is what keeps the
fleet from scaling in while tasks are still busy with hour-long jobs.

A worker admits jobs by *memory budget*, not by a fixed slot count (ADR 0015): each job
needs what :meth:`JobMemory.need` says for its source's size, and a task runs jobs while
their needs fit ``ServiceSizing.job_budget_bytes`` (at most ``concurrency`` at once). So
"jobs per task" depends on the size: :meth:`ServiceSizing.jobs_per_task`. The scaling
metric and the planner count jobs per task at ``Deployment.scaling_file_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "Deployment",
    "JobMemory",
    "QueueTiming",
    "ScalingStep",
    "ServiceSizing",
    "WorkerScaling",
]


_MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class JobMemory:
    """The most memory one download job can hold, by its source's size (ADR 0015).

    A job holds: the download queue (at most the source's size), the object being
    uploaded (one part, held whole while it fits -- a small file -- and then up to
    ``parts_in_flight`` parts uploading plus one filling) and a fixed overhead. How much
    output a source can make is bounded by the decompression-ratio check, which only
    starts after ``ratio_check_after_bytes`` of output: a tiny source may still make that
    much. A source of unknown size is counted at the worst case.

    The worker builds this from its settings (``WorkerSettings.job_memory``); the
    defaults here are the worker's defaults, and a test keeps them equal.
    """

    part_bytes: int = 16 * _MIB
    parts_in_flight: int = 4
    download_buffer_bytes: int = 8 * _MIB
    ratio_check_after_bytes: int = 16 * _MIB
    max_compression_ratio: float = 200.0
    overhead_bytes: int = 2 * _MIB

    @property
    def upload_bytes(self) -> int:
        """The most a multipart upload holds: the parts in flight and the one filling."""
        return (self.parts_in_flight + 1) * self.part_bytes

    def need(self, size_bytes: int | None) -> int:
        """Bytes a job whose source has ``size_bytes`` (``None``: unknown) may hold."""
        if size_bytes is None:
            return self.overhead_bytes + self.download_buffer_bytes + self.upload_bytes
        output = max(self.ratio_check_after_bytes, int(size_bytes * self.max_compression_ratio))
        return (
            self.overhead_bytes
            + min(size_bytes, self.download_buffer_bytes)
            + min(output, self.upload_bytes)
        )


@dataclass(frozen=True, kw_only=True)
class ServiceSizing:
    """One ECS service's task size and placement.

    Attributes:
        cpu_units: Fargate CPU units (1024 = 1 vCPU).
        memory_mib: task memory; must be a valid Fargate pair with ``cpu_units``.
        ephemeral_storage_gib: task scratch disk (20 is Fargate's free default).
        min_tasks / max_tasks: service autoscaling bounds.
        spot: run on FARGATE_SPOT (with ``on_demand_base`` tasks on FARGATE first).
        on_demand_base: tasks always placed on on-demand FARGATE before any Spot.
        stop_timeout_seconds: grace between SIGTERM and SIGKILL (Fargate max 120).
        concurrency: the most jobs one task runs at once (its handler threads).
        job_memory / job_budget_bytes: with both set, jobs are admitted while their
            :meth:`JobMemory.need` fits the budget (see :meth:`jobs_per_task`).
    """

    cpu_units: int
    memory_mib: int
    ephemeral_storage_gib: int = 20
    min_tasks: int
    max_tasks: int
    spot: bool = False
    on_demand_base: int = 0
    stop_timeout_seconds: int = 30
    concurrency: int = 1
    job_memory: JobMemory | None = None
    job_budget_bytes: int | None = None

    def jobs_per_task(self, size_bytes: int | None = None) -> int:
        """Jobs of this source size (``None``: unknown) one task runs at once.

        ``concurrency`` without a budget; with one, as many as fit the budget (at least
        one: a job bigger than the budget runs alone), never more than ``concurrency``.
        """
        if self.job_memory is None or self.job_budget_bytes is None:
            return self.concurrency
        need = min(self.job_memory.need(size_bytes), self.job_budget_bytes)
        return max(1, min(self.concurrency, self.job_budget_bytes // need))

    @property
    def vcpu(self) -> float:
        """vCPUs, as the price table counts them."""
        return self.cpu_units / 1024

    @property
    def memory_gib(self) -> float:
        """GiB of memory, as the price table counts them."""
        return self.memory_mib / 1024


@dataclass(frozen=True, kw_only=True)
class QueueTiming:
    """A queue's timing, consistent with the consumer's heartbeat.

    Attributes:
        visibility_timeout_seconds: the queue's default, also what each heartbeat
            extends a running job's visibility to.
        heartbeat_seconds: how often the heartbeat extends visibility; a third of the
            timeout, so two missed beats still leave the job covered.
        max_receive_count: receives before SQS's redrive policy dead-letters a message.
        retention_days / dlq_retention_days: message retention.
        wait_time_seconds: long-poll wait.
        oldest_message_alarm_seconds: the queue's oldest-message-age alarm threshold:
            a message waiting this long means consumers are missing or far behind.
    """

    visibility_timeout_seconds: int
    heartbeat_seconds: int
    max_receive_count: int
    retention_days: int = 4
    dlq_retention_days: int = 14
    wait_time_seconds: int = 20
    oldest_message_alarm_seconds: int = 900


@dataclass(frozen=True, kw_only=True)
class ScalingStep:
    """One step of a step-scaling policy on the load ratio.

    Applies when ``lower <= ratio < upper`` (``upper=None``: no upper bound). The fleet
    changes by ``percent`` of its current size, at least ``min_change`` tasks (ECS
    PercentChangeInCapacity with MinAdjustmentMagnitude).
    """

    lower: float
    upper: float | None
    percent: int


@dataclass(frozen=True, kw_only=True)
class WorkerScaling:
    """The worker's autoscaling policy on SQS 2 backlog per task.

    Attributes:
        metric_period_seconds: CloudWatch period of the backlog metrics.
        metric_delay_seconds: how late SQS metrics reach CloudWatch alarms (the
            planner models it; SQS publishes at 1-minute granularity, a few minutes late).
        scale_out_steps: steps on the load ratio; fast (one period) and aggressive.
        scale_out_evaluation_periods / scale_out_cooldown_seconds: how quickly it reacts.
        scale_out_min_change: smallest scale-out in tasks.
        activation_tasks: tasks started when the fleet is at zero and a message arrives.
        scale_in_below_ratio / scale_in_evaluation_periods: scale in only after the ratio
            stayed below this for this many periods (slow, so bursts do not thrash).
        scale_in_percent / scale_in_cooldown_seconds: how much and how often.
        task_startup_seconds: from scale-out decision to a task polling (planner input).
        protection_minutes: ECS task scale-in protection a busy worker holds, renewed
            while busy (1..2880), never past the task's drain deadline.
        drain_after_minutes: a worker task's maximum age: then it stops receiving and
            drains (scale-in protection would otherwise keep a loaded task forever,
            blocking deployments and scale-in).
        drain_grace_minutes: how long a draining task lets running jobs finish before
            releasing the rest; jobs up to this long always complete somewhere.
    """

    metric_period_seconds: int = 60
    metric_delay_seconds: int = 120
    scale_out_steps: tuple[ScalingStep, ...] = (
        ScalingStep(lower=1.2, upper=2.0, percent=25),
        ScalingStep(lower=2.0, upper=4.0, percent=100),
        ScalingStep(lower=4.0, upper=None, percent=300),
    )
    scale_out_evaluation_periods: int = 1
    # At least metric delay + task start-up: a shorter cooldown scales out again before
    # the tasks it just added can show in the metric, and overshoots (the planner showed
    # 91 tasks for a peak needing 62 with 60 s).
    scale_out_cooldown_seconds: int = 180
    scale_out_min_change: int = 2
    activation_tasks: int = 1
    scale_in_below_ratio: float = 0.5
    scale_in_evaluation_periods: int = 15
    scale_in_percent: int = -10
    scale_in_cooldown_seconds: int = 300
    task_startup_seconds: int = 60
    protection_minutes: int = 60
    drain_after_minutes: int = 30
    drain_grace_minutes: int = 300

    @property
    def release_bound_minutes(self) -> int:
        """Upper bound on how long a worker task stays protected after it starts.

        ``drain_after + drain_grace`` plus one minute for the release wait and clearing
        protection. A deployment or scale-in waits at most this long for a task; the
        worker also caps every protection request at this deadline, so ECS lets the
        task go by then even if the process hangs.
        """
        return self.drain_after_minutes + self.drain_grace_minutes + 1


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """Everything sizing- and scaling-related for one deployment (the defaults are
    shared instances: every part is frozen)."""

    # 0.5 vCPU needs at least 1 GiB on Fargate (512 MB is only valid with 0.25 vCPU);
    # the orchestrator is still held to a 512 MB memory budget (see ADR 0006).
    orchestrator: ServiceSizing = ServiceSizing(
        cpu_units=512,
        memory_mib=1024,
        min_tasks=1,
        max_tasks=2,
        concurrency=8,
        # The shutdown grace (90 s) plus the release wait (15 s) must fit before SIGKILL.
        stop_timeout_seconds=120,
    )
    worker: ServiceSizing = ServiceSizing(
        cpu_units=2048,
        memory_mib=4096,
        ephemeral_storage_gib=50,
        min_tasks=0,
        max_tasks=100,
        spot=True,
        on_demand_base=1,
        stop_timeout_seconds=120,
        # Small files: up to 32 at once (ADR 0015); the budget is four jobs of
        # unknown size, so large files still run four per task, as they did when
        # this was a fixed count of 4.
        concurrency=32,
        job_memory=JobMemory(),
        job_budget_bytes=4 * JobMemory().need(None),
    )
    # Every transient failure of a page (vendor 5xx, 429) costs a receive; with the
    # runtime's backoff (10 s doubling to 900 s) 15 receives ride out ~2 h of vendor
    # outage before a page is parked in the DLQ. 5 gave up after ~150 s.
    requests_queue: QueueTiming = QueueTiming(
        visibility_timeout_seconds=120, heartbeat_seconds=40, max_receive_count=15
    )
    # Spot reclaims release jobs and each release costs a receive, hence 10.
    jobs_queue: QueueTiming = QueueTiming(
        visibility_timeout_seconds=180,
        heartbeat_seconds=60,
        max_receive_count=10,
        # A burst is meant to queue while the fleet scales out; an hour of waiting is not.
        oldest_message_alarm_seconds=3600,
    )
    worker_scaling: WorkerScaling = WorkerScaling()
    orchestrator_scale_out_backlog: int = 100
    """Visible SQS 1 messages above which the orchestrator adds its second task."""
    orchestrator_scale_in_evaluation_periods: int = 15
    """Metric periods SQS 1 must stay empty before the orchestrator drops a task.

    The orchestrator reuses the worker's metric period and cooldowns
    (``worker_scaling.metric_period_seconds``, ``scale_out_cooldown_seconds``,
    ``scale_in_cooldown_seconds``) and scales out after one period above
    ``orchestrator_scale_out_backlog``.
    """
    shutdown_grace_seconds: int = 90
    """How long a stopping task lets short jobs finish; inside the 120 s stop timeout."""
    scaling_file_bytes: int | None = None
    """Source size at which the worker's scaling metric and the planner count jobs per
    task (``None``: unknown, the worst case). CloudWatch cannot see message sizes, so
    the load ratio assumes every job is this big; the default overstates the load of
    small files, which errs towards more tasks, never towards scaling in busy ones."""

    @property
    def worker_jobs_per_task(self) -> int:
        """Jobs per worker task at :attr:`scaling_file_bytes` (the scaling divisor)."""
        return self.worker.jobs_per_task(self.scaling_file_bytes)


DEFAULT_DEPLOYMENT = Deployment()
