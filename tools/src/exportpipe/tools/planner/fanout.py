"""The orchestrator stage: SQS 1 export events -> Export API pages -> jobs on SQS 2.

The model (one page per message, batches of 10, a continuation per further page, and
the orchestrator's scaling rules) is docs/planner.md, *The model*, step 1; scaling runs
on the worker's metric period, metric delay, cooldowns and task start-up time.

Request counting (per measured window): one send per export event (its producer) and
per continuation; one receive, one delete per page; one empty long poll per
``wait_time_seconds`` per task while SQS 1 is empty.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import astuple, dataclass

import numpy as np

from exportpipe.common.sizing import Deployment
from exportpipe.tools.planner.config import Workload
from exportpipe.tools.planner.workload import EventStream, FloatArray

__all__ = ["FanoutResult", "SqsCounts", "simulate_fanout"]


@dataclass
class SqsCounts:
    """SQS requests by API call, counted inside the measured window."""

    sends: int = 0
    receives: int = 0
    empty_receives: int = 0
    deletes: int = 0
    visibility_changes: int = 0

    @property
    def total(self) -> int:
        """All billable requests."""
        return sum(astuple(self))


@dataclass(eq=False)
class FanoutResult:
    """What the orchestrator stage hands to the worker simulation, and what it cost.

    Attributes:
        job_times: when each job became visible on SQS 2, ascending.
        job_durations: each job's run time, aligned with ``job_times``.
        task_seconds: orchestrator task-seconds billed inside the window.
        sqs1: SQS 1 requests inside the window.
        sqs2_send_batches: ``SendMessageBatch`` calls to SQS 2 inside the window.
        max_backlog: most visible SQS 1 messages seen at a metric sample.
        peak_tasks: most orchestrator tasks billed at once.
    """

    job_times: FloatArray
    job_durations: FloatArray
    task_seconds: float
    sqs1: SqsCounts
    sqs2_send_batches: int
    max_backlog: int
    peak_tasks: int


def simulate_fanout(
    stream: EventStream, deployment: Deployment, workload: Workload
) -> FanoutResult:
    """Run SQS 1 and the orchestrator over ``stream``; return the jobs for SQS 2."""
    sizing = deployment.orchestrator
    scaling = deployment.worker_scaling
    queue_timing = deployment.requests_queue
    period = float(scaling.metric_period_seconds)
    lag = math.ceil(scaling.metric_delay_seconds / period)
    w0, w1 = stream.window
    page_s = workload.page_seconds
    per_page = workload.files_per_page
    beats_per_page = int(page_s // queue_timing.heartbeat_seconds)

    times: list[float] = stream.times.tolist()
    files: list[int] = stream.files.tolist()
    offsets = np.concatenate(([0], np.cumsum(stream.files)[:-1])).astype(np.int64).tolist()

    job_t: list[float] = []
    job_idx: list[int] = []
    counts = SqsCounts()
    sqs2_batches = 0

    start = math.floor(min(times[0] if times else w0, w0) / period) * period
    t_last = start
    ready = sizing.min_tasks
    pending: deque[float] = deque()  # ready times of starting tasks, ascending
    desired = sizing.min_tasks
    busy = 0
    # Constant page time: pages finish in the order they start, so a deque is a heap.
    inflight: deque[tuple[float, int, int, int]] = deque()  # done, event, offset, files left
    waiting: deque[tuple[int, int, int]] = deque()  # event, file offset, files left
    samples: list[int] = []
    last_out = last_in = -math.inf
    task_seconds = 0.0
    idle_poll_area = 0.0
    max_backlog = 0
    peak_tasks = ready
    next_tick = start + period
    i = 0
    n = len(times)
    inf = math.inf

    def start_pages(now: float) -> None:
        nonlocal busy
        capacity = ready * sizing.concurrency
        while waiting and busy < capacity:
            ev, off, left = waiting.popleft()
            busy += 1
            inflight.append((now + page_s, ev, off, left))
            if w0 <= now < w1:
                counts.receives += 1

    while True:
        # Chained comparisons rather than min()/max(): this loop runs per page.
        t = t_arr = times[i] if i < n else inf
        t_done = inflight[0][0] if inflight else inf
        t = t_done if t_done < t else t
        t_ready = pending[0] if pending else inf
        t = t_ready if t_ready < t else t
        t = next_tick if next_tick < t else t
        if t == inf or (i >= n and not inflight and not waiting and next_tick > w1):
            break
        # Integrate billing and idle long polls over [t_last, t) clipped to the window.
        if t > t_last:
            lo = t_last if t_last > w0 else w0
            hi = t if t < w1 else w1
            if hi > lo:
                task_seconds += (ready + len(pending)) * (hi - lo)
                if not waiting:
                    idle_poll_area += ready * (hi - lo)
            t_last = t
        in_window = w0 <= t < w1
        if t == t_done:
            _, ev, off, left = inflight.popleft()
            busy -= 1
            sent = min(per_page, left)
            job_t.extend([t] * sent)
            job_idx.extend(range(off, off + sent))
            if in_window:
                counts.deletes += 1
                counts.visibility_changes += beats_per_page
                sqs2_batches += math.ceil(sent / 10)
            if left - sent > 0:
                waiting.append((ev, off + sent, left - sent))
                if in_window:
                    counts.sends += 1
            start_pages(t)
        elif t == t_arr:
            waiting.append((i, offsets[i], files[i]))
            i += 1
            if in_window:
                counts.sends += 1
            start_pages(t)
        elif t == t_ready:
            pending.popleft()
            ready += 1
            start_pages(t)
        else:
            samples.append(len(waiting))
            max_backlog = max(max_backlog, len(waiting))
            k = len(samples) - 1 - lag
            if k >= 0:
                if (
                    samples[k] >= deployment.orchestrator_scale_out_backlog
                    and t - last_out >= scaling.scale_out_cooldown_seconds
                    and desired < sizing.max_tasks
                ):
                    desired += 1
                    last_out = t
                else:
                    n_in = deployment.orchestrator_scale_in_evaluation_periods
                    quiet = k + 1 >= n_in and not any(samples[k - n_in + 1 : k + 1])
                    if (
                        quiet
                        and t - last_in >= scaling.scale_in_cooldown_seconds
                        and desired > sizing.min_tasks
                    ):
                        desired -= 1
                        last_in = t
            while ready + len(pending) < desired:
                pending.append(t + scaling.task_startup_seconds)
            while ready + len(pending) > desired:
                # A stopping orchestrator finishes its in-flight pages within seconds.
                if pending:
                    pending.pop()
                else:
                    ready -= 1
            peak_tasks = max(peak_tasks, ready + len(pending))
            next_tick = t + period

    counts.empty_receives = int(idle_poll_area / queue_timing.wait_time_seconds)
    order = np.argsort(np.asarray(job_t), kind="stable")
    job_times = np.asarray(job_t, dtype=np.float64)[order]
    job_durations = stream.durations[np.asarray(job_idx, dtype=np.int64)[order]]
    return FanoutResult(
        job_times=job_times,
        job_durations=job_durations,
        task_seconds=task_seconds,
        sqs1=counts,
        sqs2_send_batches=sqs2_batches,
        max_backlog=max_backlog,
        peak_tasks=peak_tasks,
    )
