"""Discrete-event simulation of SQS 2 and the worker fleet under one scaling policy.

The model is docs/planner.md, *The model*, steps 2-6: SQS 2 delivers in the run's
:class:`.fairqueue.Delivery` order to tasks of ``Deployment.worker_jobs_per_task`` slots
that heartbeat as ``QueueConsumer`` does; each metric period a :class:`MetricSample` goes
to the policy's controller and the fleet is reconciled as the ECS scheduler does
(start-up delay, the on-demand base then Spot, Spot reclaimed at an exponential rate; a
surplus stops starting, then idle, then unprotected busy tasks); a stopping task finishes
what fits in its grace and releases the rest, and a job received ``max_receive_count``
times is dead-lettered. Beyond that page:

* Job-hours lost to releases are counted per cause (Spot reclaim, each kind of drain) as
  simulated (each retry starts from byte 0) and as they would be with resumable jobs
  (ADR 0020): a release then loses at most ``resume_loss_seconds`` (the unfinished part,
  buffers, the restart). The second figure is counted on the same run, not re-simulated.
* Bounded lifetime (``exportpipe.worker.lifetime``): ``drain_after_minutes`` after it
  started polling a task drains the same way with ``drain_grace_minutes`` of grace, then
  exits; it counts as running until it exits, and ECS then replaces it if the service
  still wants it.
* A deployment (``deploy_at``) starts a new task set at once (maximum 200 %); each old
  task keeps working while busy (scale-in protection also holds off deployments) and
  is stopped once idle, or leaves at its drain deadline. ``deployment_seconds`` is when
  the last old task stopped.

An open window (``(start, math.inf)``) runs until the last job is done: the whale
scenario (:mod:`.whale`) measures a backlog of days that way.

Event loop: one heap of timed events (job done, job released, task ready, task
stopped, Spot reclaim) merged with the sorted arrival array and the per-period control
tick, so work is O(events log events) and a 100,000-job day runs in about a second.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from exportpipe.common.sizing import Deployment
from exportpipe.tools.planner.fairqueue import OLDEST_FIRST, Delivery
from exportpipe.tools.planner.fanout import SqsCounts
from exportpipe.tools.planner.policies import MetricSample, ScalingPolicy
from exportpipe.tools.planner.workload import FloatArray

__all__ = ["RESUME_LOSS_SECONDS", "ScalingAction", "WorkerRun", "simulate_workers"]

# What a released job still loses with resume (ADR 0020): the part being filled and the
# buffers ahead of it (~24 MiB, about a second at the worker's rate), up to one
# checkpoint interval (5 s) if the release came as a crash, and the next attempt's
# checkpoint read and ListParts. Rounded up; bench/resume.py measures the real figure.
RESUME_LOSS_SECONDS = 15.0

_DONE, _RELEASE, _READY, _STOP, _RECLAIM, _DRAIN, _DEPLOY = range(7)
_SPOT, _SCALE_IN, _AGE, _DEPLOYMENT = "spot", "scale-in", "max-age", "deployment"


@dataclass(frozen=True, slots=True)
class ScalingAction:
    """A change of the worker service's desired count."""

    time: float
    old: int
    new: int


@dataclass(eq=False)
class WorkerRun:
    """One policy's simulated window.

    Attributes:
        policy: the policy's name.
        spot_task_seconds / on_demand_task_seconds: billed worker task-seconds inside the
            window (from launch to stop).
        peak_tasks: most worker tasks billed at once inside the window.
        sqs2: SQS 2 receives, empty receives, deletes and visibility changes in the window
            (sends are the orchestrator's).
        waits: total time each job enqueued inside the window spent visible on SQS 2,
            summed over its attempts (jobs unfinished at the end count as waiting until
            then).
        first_receives / ends: when each of those jobs was first received, and when it
            was deleted or dead-lettered (``nan``: never).
        max_backlog: most visible SQS 2 messages inside the window.
        jobs_retried_spot / jobs_retried_scale_in: window jobs released at least once
            because their task was reclaimed / scaled in.
        jobs_retried_age: window jobs released at least once by a task's age drain.
        age_drains: tasks that drained at their maximum age inside the window.
        deployment_seconds: from ``deploy_at`` until the last old task stopped (``None``:
            no deployment, or it had not finished when the simulation stopped).
        releases: all releases of window jobs.
        dead_lettered: window jobs dead-lettered after ``max_receive_count`` receives.
        lost_slot_seconds: work thrown away by releases (elapsed time of released runs).
        lost_seconds / lost_seconds_resumed: the same by cause (``spot``, ``scale-in``,
            ``max-age``, ``deployment``), without and with resumable jobs.
        unfinished: window jobs not finished when the simulation stopped.
        spot_reclaims: Spot reclaims inside the window.
        oldest_alarm_periods: metric periods inside the window in which the oldest
            visible message was older than SQS 2's oldest-message alarm threshold.
        actions: every desired-count change, in order.
        series: per-period series inside the window (keys ``hour``, ``visible``,
            ``in_flight``, ``tasks``, ``desired``, ``spot_task_hours``,
            ``on_demand_task_hours`` cumulative; with fair queues also ``noisy``, the
            noisy tenants).
        events: events processed (for the performance note).
        wall_seconds: how long the simulation took.
    """

    policy: str
    spot_task_seconds: float = 0.0
    on_demand_task_seconds: float = 0.0
    peak_tasks: int = 0
    sqs2: SqsCounts = field(default_factory=SqsCounts)
    waits: FloatArray = field(default_factory=lambda: np.zeros(0))
    first_receives: FloatArray = field(default_factory=lambda: np.zeros(0))
    ends: FloatArray = field(default_factory=lambda: np.zeros(0))
    max_backlog: int = 0
    jobs_retried_spot: int = 0
    jobs_retried_scale_in: int = 0
    jobs_retried_age: int = 0
    age_drains: int = 0
    deployment_seconds: float | None = None
    releases: int = 0
    dead_lettered: int = 0
    lost_slot_seconds: float = 0.0
    lost_seconds: dict[str, float] = field(default_factory=dict)
    lost_seconds_resumed: dict[str, float] = field(default_factory=dict)
    unfinished: int = 0
    spot_reclaims: int = 0
    oldest_alarm_periods: int = 0
    actions: list[ScalingAction] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)
    events: int = 0
    wall_seconds: float = 0.0


@dataclass(slots=True, eq=False)  # eq=False: tasks are sets' and lists' members by identity
class _Task:
    spot: bool
    kept: bool = False  # draining, still counted by the service until it exits
    old: bool = False  # of a deployment being replaced
    cause: str = ""
    ready: bool = False
    stopping: bool = False
    busy: int = 0
    queued: bool = False
    jobs: dict[int, float] = field(default_factory=dict)  # job -> start of the current attempt


class _Sim:
    def __init__(
        self,
        job_times: FloatArray,
        job_durations: FloatArray,
        policy: ScalingPolicy,
        deployment: Deployment,
        *,
        window: tuple[float, float],
        spot_interruptions_per_hour: float,
        seed: int,
        drain_seconds: float,
        start: float | None,
        initial_tasks: int | None,
        drain_after_seconds: float | None,
        drain_grace_seconds: float | None,
        deploy_at: float | None,
        delivery: Delivery,
        tenants: Sequence[str] | None,
    ) -> None:
        worker = deployment.worker
        scaling = deployment.worker_scaling
        self.job_times = job_times
        self.jt: list[float] = job_times.tolist()
        self.dur: list[float] = job_durations.tolist()
        self.n = len(self.jt)
        self.policy = policy
        self.controller = policy.controller()
        self.conc = deployment.worker_jobs_per_task
        self.grace = float(min(deployment.shutdown_grace_seconds, worker.stop_timeout_seconds))
        self.hb = float(deployment.jobs_queue.heartbeat_seconds)
        self.max_receives = deployment.jobs_queue.max_receive_count
        self.alarm_age = float(deployment.jobs_queue.oldest_message_alarm_seconds)
        self.wait_time = float(deployment.jobs_queue.wait_time_seconds)
        self.startup = float(scaling.task_startup_seconds)
        self.period = float(scaling.metric_period_seconds)
        self.od_base = worker.on_demand_base if worker.spot else math.inf
        self.reclaim_rate = spot_interruptions_per_hour / 3600.0 if worker.spot else 0.0
        self.w0, self.w1 = window
        self.horizon = self.w1 + drain_seconds
        # Once every job is done the run stops at the window's end, or at once if open.
        self.settled = self.w1 if math.isfinite(self.w1) else -math.inf
        first = min(self.jt[0], self.w0) if self.jt else self.w0
        self.start = start if start is not None else math.floor(first / self.period) * self.period
        # Simulation draws, not secrets: seeded for reproducible reports.
        self.rng = random.Random(seed)  # noqa: S311
        self.run = WorkerRun(policy=policy.name)
        if drain_after_seconds is None:
            drain_after_seconds = scaling.drain_after_minutes * 60.0
        if drain_grace_seconds is None:
            drain_grace_seconds = scaling.drain_grace_minutes * 60.0
        self.drain_after = drain_after_seconds
        self.drain_grace = drain_grace_seconds
        self.deploy_at = deploy_at
        self.old_tasks: set[_Task] = set()

        self.heap: list[tuple[float, int, int, _Task, int, int]] = []
        self.seq = 0
        self.fair = delivery.fair
        self.queue = delivery.queue()
        if tenants is not None and len(tenants) != self.n:
            raise ValueError(f"{len(tenants)} tenants for {self.n} jobs")
        self.tenant: Sequence[str] = tenants if tenants is not None else [""] * self.n
        self.free: deque[_Task] = deque()
        self.live: list[_Task] = []
        self.active = 0
        self.active_od = 0
        self.running = 0
        self.billed_spot = 0
        self.billed_od = 0
        self.busy_total = 0
        self.n_free = 0
        self.n_busy_tasks = 0
        self.desired = policy.initial_tasks(self.start) if initial_tasks is None else initial_tasks
        self.terminal = 0
        self.visible_since = [0.0] * self.n
        self.wait = [0.0] * self.n
        self.token = [0] * self.n
        self.receives = [0] * self.n
        self.first_receive = [math.nan] * self.n
        self.end = [math.nan] * self.n
        self.released_by: list[set[str] | None] = [None] * self.n
        self.t_last = self.start
        self.period_busy = 0.0
        self.period_running = 0.0
        self.spot_area = 0.0
        self.od_area = 0.0
        self.idle_poll_area = 0.0
        self.heartbeat_area = 0.0
        self.samples: list[MetricSample] = []

    # -- time ---------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        dt = t - self.t_last
        if dt <= 0:
            return
        self.period_busy += self.busy_total * dt
        self.period_running += self.running * dt
        # Conditional expressions, not max()/min(): this runs on every event.
        lo = self.t_last if self.t_last > self.w0 else self.w0
        hi = t if t < self.w1 else self.w1
        if hi > lo:
            self.spot_area += self.billed_spot * (hi - lo)
            self.od_area += self.billed_od * (hi - lo)
            self.heartbeat_area += self.n_busy_tasks * (hi - lo)
            if not self.queue.visible:
                self.idle_poll_area += self.n_free * (hi - lo)
        self.t_last = t

    def push(self, t: float, kind: int, task: _Task, job: int = -1, token: int = 0) -> None:
        heapq.heappush(self.heap, (t, self.seq, kind, task, job, token))
        self.seq += 1

    # -- jobs ---------------------------------------------------------------------------

    def enqueue(self, j: int, t: float) -> None:
        self.visible_since[j] = t
        free = self.free
        conc = self.conc
        while free:
            task = free[0]
            if task.stopping or not task.ready or task.busy >= conc:
                free.popleft()
                task.queued = False
                continue
            self.start_job(task, j, t)
            free.popleft()
            if task.busy < conc:
                free.append(task)  # pollers take turns
            else:
                task.queued = False
            return
        queue = self.queue
        queue.push(self.tenant[j], t, j)
        if self.w0 <= t < self.w1 and queue.visible > self.run.max_backlog:
            self.run.max_backlog = queue.visible

    def start_job(self, task: _Task, j: int, t: float) -> None:
        self.wait[j] += t - self.visible_since[j]
        self.token[j] += 1
        self.receives[j] += 1
        if self.receives[j] == 1:
            self.first_receive[j] = t
        if self.fair:
            self.queue.started(self.tenant[j], t)
        task.jobs[j] = t
        if task.busy == 0:
            self.n_busy_tasks += 1
        task.busy += 1
        self.busy_total += 1
        if task.busy == self.conc:
            self.n_free -= 1
        if self.w0 <= t < self.w1:
            self.run.sqs2.receives += 1
        self.push(t + self.dur[j], _DONE, task, j, self.token[j])

    def end_attempt(self, task: _Task, j: int, t: float) -> None:
        if self.fair:
            self.queue.finished(self.tenant[j], t)
        task.jobs.pop(j)
        task.busy -= 1
        if task.busy == 0:
            self.n_busy_tasks -= 1
        self.busy_total -= 1
        if not task.stopping and task.busy == self.conc - 1:
            self.n_free += 1

    def on_done(self, task: _Task, j: int, token: int, t: float) -> None:
        if self.token[j] != token:
            return
        self.end_attempt(task, j, t)
        self.terminal += 1
        self.end[j] = t
        if self.w0 <= t < self.w1:
            self.run.sqs2.deletes += 1
        if task.stopping:
            return
        got = self.queue.pop(t) if self.queue.visible else None
        if got is not None:
            self.start_job(task, got[2], t)
            return
        if not task.queued:
            task.queued = True
            self.free.append(task)
        if task.old and task.busy == 0:
            self.stop(task, t, _DEPLOYMENT)  # protection cleared: the deployment takes it
            return
        if self.policy.protect_busy and task.busy == 0 and self.active > self.desired:
            self.stop(task, t, _SCALE_IN)

    def on_release(self, task: _Task, j: int, token: int, t: float, cause: str) -> None:
        if self.token[j] != token:
            return
        started = task.jobs[j]
        self.end_attempt(task, j, t)
        self.token[j] += 1  # the attempt's pending "done" is void
        in_window_job = self.w0 <= self.jt[j] < self.w1
        if self.w0 <= t < self.w1:
            self.run.sqs2.visibility_changes += 1
        if in_window_job:
            self.run.releases += 1
            self.run.lost_slot_seconds += t - started
            lost, resumed = self.run.lost_seconds, self.run.lost_seconds_resumed
            lost[cause] = lost.get(cause, 0.0) + t - started
            resumed[cause] = resumed.get(cause, 0.0) + min(t - started, RESUME_LOSS_SECONDS)
            causes = self.released_by[j]
            if causes is None:
                causes = self.released_by[j] = set()
            causes.add(cause)
        if self.receives[j] >= self.max_receives:
            self.terminal += 1
            self.end[j] = t
            if in_window_job:
                self.run.dead_lettered += 1
            return
        self.enqueue(j, t)

    # -- tasks --------------------------------------------------------------------------

    def launch(self, t: float, *, ready_now: bool = False) -> None:
        spot = self.active_od >= self.od_base
        task = _Task(spot)
        self.live.append(task)
        self.active += 1
        if spot:
            self.billed_spot += 1
        else:
            self.active_od += 1
            self.billed_od += 1
        if ready_now:
            self.on_ready(task, t)
        else:
            self.push(t + self.startup, _READY, task)
        if spot and self.reclaim_rate > 0:
            self.push(t + self.rng.expovariate(self.reclaim_rate), _RECLAIM, task)

    def on_ready(self, task: _Task, t: float) -> None:
        if task.stopping:
            return
        task.ready = True
        if math.isfinite(self.drain_after):
            self.push(t + self.drain_after, _DRAIN, task)
        self.running += 1
        self.n_free += 1
        while task.busy < self.conc and (got := self.queue.pop(t)) is not None:
            self.start_job(task, got[2], t)
        if task.busy < self.conc:
            task.queued = True
            self.free.append(task)

    def stop(
        self,
        task: _Task,
        t: float,
        cause: str,
        *,
        grace: float | None = None,
        keep_active: bool = False,
    ) -> None:
        if task.stopping:
            return
        task.stopping = True
        if not task.old:
            self.live.remove(task)
            if keep_active:
                task.kept = True  # the service counts it until it exits
            else:
                self.active -= 1
                if not task.spot:
                    self.active_od -= 1
        if not task.ready:
            self.finish_stop(task, t)
            return
        if task.busy < self.conc:
            self.n_free -= 1
        grace = self.grace if grace is None else grace
        stop_at = t
        for j, started in task.jobs.items():
            end = started + self.dur[j]
            if end - t <= grace:
                stop_at = max(stop_at, end)
            else:
                self.push(t + grace, _RELEASE, task, j, self.token[j])
                stop_at = max(stop_at, t + grace)
        task.cause = cause
        self.push(stop_at, _STOP, task)

    def on_drain(self, task: _Task, t: float) -> None:
        if task.stopping:
            return
        if self.w0 <= t < self.w1:
            self.run.age_drains += 1
        self.stop(task, t, _AGE, grace=self.drain_grace, keep_active=True)

    def on_deploy(self, t: float) -> None:
        old = list(self.live)
        for task in old:
            task.old = True
            self.live.remove(task)
            self.active -= 1
            if not task.spot:
                self.active_od -= 1
            self.old_tasks.add(task)
        for task in old:
            # Unprotected or idle tasks are stopped at once (SIGTERM, the usual grace).
            if not task.ready or task.busy == 0 or not self.policy.protect_busy:
                self.stop(task, t, _DEPLOYMENT)
        self.reconcile(t)
        if not self.old_tasks:
            self.run.deployment_seconds = 0.0

    def finish_stop(self, task: _Task, t: float) -> None:
        if task.kept:
            self.active -= 1
            if not task.spot:
                self.active_od -= 1
        if task.old:
            self.old_tasks.discard(task)
            if not self.old_tasks and self.deploy_at is not None:
                self.run.deployment_seconds = t - self.deploy_at
        if task.spot:
            self.billed_spot -= 1
        else:
            self.billed_od -= 1
        if task.ready:
            self.running -= 1

    def on_reclaim(self, task: _Task, t: float) -> None:
        if task.stopping:
            return
        if self.w0 <= t < self.w1:
            self.run.spot_reclaims += 1
        self.stop(task, t, _SPOT)
        self.reconcile(t)

    def reconcile(self, t: float) -> None:
        while self.active < self.desired:
            self.launch(t)
        surplus = self.active - self.desired
        if surplus <= 0:
            return
        starting = [x for x in reversed(self.live) if not x.ready]
        idle = sorted(
            (x for x in reversed(self.live) if x.ready and x.busy == 0),
            key=lambda x: not x.spot,  # keep the on-demand base: stop Spot first
        )
        order = starting + idle
        if not self.policy.protect_busy:
            busy = [x for x in self.live if x.ready and x.busy > 0]
            order += self.rng.sample(busy, min(len(busy), max(0, surplus - len(order))))
        for task in order[:surplus]:
            self.stop(task, t, _SCALE_IN)

    # -- control ------------------------------------------------------------------------

    def tick(self, t: float) -> None:
        slots = self.period_running * self.conc
        cpu = self.period_busy / slots if slots > 0 else 0.0
        self.samples.append(
            MetricSample(
                time=t,
                visible=self.queue.visible,
                in_flight=self.busy_total,
                running=self.running,
                cpu=cpu,
                desired=self.desired,
            )
        )
        self.period_busy = self.period_running = 0.0
        new = self.controller.decide(t, self.samples, self.desired)
        if new != self.desired:
            self.run.actions.append(ScalingAction(time=t, old=self.desired, new=new))
            self.desired = new
        self.reconcile(t)
        if self.w0 <= t <= self.w1:
            run = self.run
            tasks = self.billed_spot + self.billed_od
            run.peak_tasks = max(run.peak_tasks, tasks)
            oldest = self.queue.oldest_visible_at()
            if oldest is not None and t - oldest > self.alarm_age:
                run.oldest_alarm_periods += 1
            s = run.series
            s["hour"].append((t - self.w0) / 3600.0)
            s["visible"].append(float(self.queue.visible))
            s["in_flight"].append(float(self.busy_total))
            s["tasks"].append(float(tasks))
            s["desired"].append(float(self.desired))
            s["spot_task_hours"].append(self.spot_area / 3600.0)
            s["on_demand_task_hours"].append(self.od_area / 3600.0)
            if self.fair:
                s["noisy"].append(float(len(self.queue.noisy_tenants(t))))

    # -- main loop ----------------------------------------------------------------------

    def simulate(self) -> WorkerRun:
        began = time.perf_counter()
        for key in (
            "hour",
            "visible",
            "in_flight",
            "tasks",
            "desired",
            "spot_task_hours",
            "on_demand_task_hours",
            *(("noisy",) if self.fair else ()),
        ):
            self.run.series[key] = []
        for _ in range(self.desired):
            self.launch(self.start, ready_now=True)
        if self.deploy_at is not None:
            self.push(self.deploy_at, _DEPLOY, _Task(False))
        heap = self.heap
        jt = self.jt
        n = self.n
        i = 0
        events = 0
        next_tick = self.start + self.period
        inf = math.inf
        while True:
            t_arr = jt[i] if i < n else inf
            t_ev = heap[0][0] if heap else inf
            t = t_arr if t_arr <= t_ev else t_ev
            if next_tick < t:
                if (self.terminal >= n and next_tick > self.settled) or next_tick > self.horizon:
                    break
                self.advance(next_tick)
                self.tick(next_tick)
                next_tick += self.period
                continue
            if t > self.horizon:
                break
            events += 1
            self.advance(t)
            if t_arr <= t_ev:
                self.enqueue(i, t)
                i += 1
                continue
            _, _, kind, task, j, token = heapq.heappop(heap)
            if kind == _DONE:
                self.on_done(task, j, token, t)
            elif kind == _RELEASE:
                self.on_release(task, j, token, t, task.cause)
            elif kind == _READY:
                self.on_ready(task, t)
            elif kind == _STOP:
                self.finish_stop(task, t)
                if task.kept:
                    self.reconcile(t)  # ECS replaces a drained task it still wants
            elif kind == _RECLAIM:
                self.on_reclaim(task, t)
            elif kind == _DRAIN:
                self.on_drain(task, t)
            else:
                self.on_deploy(t)
        self.finish(next_tick, events, time.perf_counter() - began)
        return self.run

    def finish(self, end: float, events: int, wall: float) -> None:
        run = self.run
        run.spot_task_seconds = self.spot_area
        run.on_demand_task_seconds = self.od_area
        run.sqs2.empty_receives = int(self.idle_poll_area / self.wait_time)
        run.sqs2.visibility_changes += int(self.heartbeat_area / self.hb)
        in_window = np.flatnonzero((self.job_times >= self.w0) & (self.job_times < self.w1))
        waits = np.asarray(self.wait, dtype=np.float64)
        queued = np.fromiter(self.queue.messages(), dtype=np.int64)
        waits[queued] += end - np.asarray(self.visible_since)[queued]
        run.waits = waits[in_window]
        run.first_receives = np.asarray(self.first_receive, dtype=np.float64)[in_window]
        run.ends = np.asarray(self.end, dtype=np.float64)[in_window]
        run.unfinished = int(np.count_nonzero(np.isnan(run.ends)))
        for causes in self.released_by:  # set for window jobs only
            if causes:
                run.jobs_retried_spot += _SPOT in causes
                run.jobs_retried_scale_in += _SCALE_IN in causes
                run.jobs_retried_age += _AGE in causes
        run.events = events
        run.wall_seconds = wall


def simulate_workers(
    job_times: FloatArray,
    job_durations: FloatArray,
    policy: ScalingPolicy,
    deployment: Deployment,
    *,
    window: tuple[float, float],
    spot_interruptions_per_hour: float = 0.0,
    seed: int = 1,
    drain_seconds: float = 2 * 86_400.0,
    start: float | None = None,
    initial_tasks: int | None = None,
    drain_after_seconds: float | None = None,
    drain_grace_seconds: float | None = None,
    deploy_at: float | None = None,
    delivery: Delivery = OLDEST_FIRST,
    tenants: Sequence[str] | None = None,
) -> WorkerRun:
    """Simulate SQS 2 and the worker fleet under ``policy``.

    Args:
        job_times: when each job becomes visible on SQS 2 (seconds, ascending).
        job_durations: each job's run time in seconds, aligned with ``job_times``.
        policy: the scaling policy (its controller is created fresh for this run).
        deployment: sizes, queue timing and scaling parameters.
        window: ``(start, end)`` of the measured window; billing, requests and the
            series are counted inside it, waits for jobs enqueued inside it. With
            ``end`` = ``math.inf`` the run ends when the last job is done.
        spot_interruptions_per_hour: Spot reclaims per Spot task-hour.
        seed: seeds Spot reclaims and the choice of unprotected tasks to stop.
        drain_seconds: keep simulating this long after the window for its jobs to end.
        start: simulation start (default: the first job or the window, whichever is
            earlier, rounded down to a metric period).
        initial_tasks: tasks running (already started) at ``start`` and the initial
            desired count (default: the policy's).
        drain_after_seconds / drain_grace_seconds: a task's maximum age and the grace
            of its drain (default: ``deployment.worker_scaling``; ``math.inf`` for
            none, as before issue 17).
        deploy_at: simulate a deployment of the worker service at this time.
        delivery: SQS 2's delivery order (default oldest first).
        tenants: each job's tenant, aligned with ``job_times`` (default: none, one
            group); fair delivery shares the fleet between them.

    Returns:
        The run's measurements.
    """
    return _Sim(
        job_times,
        job_durations,
        policy,
        deployment,
        window=window,
        spot_interruptions_per_hour=spot_interruptions_per_hour,
        seed=seed,
        drain_seconds=drain_seconds,
        start=start,
        initial_tasks=initial_tasks,
        drain_after_seconds=drain_after_seconds,
        drain_grace_seconds=drain_grace_seconds,
        deploy_at=deploy_at,
        delivery=delivery,
        tenants=tenants,
    ).simulate()
