"""The autoscaling model reacts to load the way exportpipe.common.sizing says it should."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment
from exportpipe.tools.planner import (
    ConfiguredPolicy,
    CpuTargetPolicy,
    FixedFleet,
    WorkerRun,
    percent_change,
    simulate_workers,
)

SCALING = DEFAULT_DEPLOYMENT.worker_scaling
PERIOD = SCALING.metric_period_seconds
LAG = math.ceil(SCALING.metric_delay_seconds / PERIOD) * PERIOD
SLOTS = DEFAULT_DEPLOYMENT.worker_jobs_per_task
LONG = 10 * 3600.0


def on_demand(**worker: object) -> Deployment:
    """The default deployment on on-demand only (no reclaims) with worker overrides."""
    return replace(
        DEFAULT_DEPLOYMENT, worker=replace(DEFAULT_DEPLOYMENT.worker, spot=False, **worker)
    )


@pytest.mark.parametrize(
    ("percent", "capacity", "min_magnitude", "change"),
    [
        (25, 10, 2, 2),
        (25, 3, 0, 1),
        (100, 10, 2, 10),
        (300, 0, 2, 2),
        (-10, 9, 0, -1),
        (-10, 25, 0, -2),
    ],
)
def test_percent_change_rounds_like_application_auto_scaling(
    percent: int, capacity: int, min_magnitude: int, change: int
) -> None:
    assert percent_change(capacity, percent, min_magnitude) == change


def test_step_in_load_scales_out_after_delay_and_evaluation_by_the_step_percent() -> None:
    tasks = 10
    deployment = on_demand()
    t_step = 610.0
    # Every slot busy and nothing waiting (ratio 1.0: inside the dead band), then a step
    # that takes the backlog-per-task ratio to 3.0.
    ratio = 3.0
    base = [0.0] * (tasks * SLOTS)
    burst = [t_step] * int(tasks * SLOTS * (ratio - 1))
    times = np.asarray(base + burst)
    run = simulate_workers(
        times,
        np.full(times.size, LONG),
        ConfiguredPolicy(deployment=deployment),
        deployment,
        window=(0.0, 3600.0),
        start=0.0,
        initial_tasks=tasks,
        drain_after_seconds=math.inf,
    )

    first_sample = math.ceil(t_step / PERIOD) * PERIOD
    expected_time = first_sample + LAG + (SCALING.scale_out_evaluation_periods - 1) * PERIOD
    step = next(
        s
        for s in SCALING.scale_out_steps
        if s.lower <= ratio and (s.upper is None or ratio < s.upper)
    )
    first = run.actions[0]
    assert first.time == expected_time
    assert (first.old, first.new) == (
        tasks,
        tasks + percent_change(tasks, step.percent, SCALING.scale_out_min_change),
    )
    # The new tasks poll only after their start-up time: the first burst job to run
    # waited from the step until then.
    burst_waits = run.waits[len(base) :]
    assert burst_waits.min() == pytest.approx(expected_time + SCALING.task_startup_seconds - t_step)


def test_idle_fleet_scales_in_slowly_by_the_configured_percent() -> None:
    tasks = 10
    deployment = on_demand(min_tasks=0)
    run = simulate_workers(
        np.zeros(0),
        np.zeros(0),
        ConfiguredPolicy(deployment=deployment),
        deployment,
        window=(0.0, 3600.0),
        start=0.0,
        initial_tasks=tasks,
        drain_after_seconds=math.inf,
    )

    first, second = run.actions[:2]
    assert first.time == LAG + SCALING.scale_in_evaluation_periods * PERIOD
    assert first.new == tasks + percent_change(tasks, SCALING.scale_in_percent)
    assert second.time == first.time + SCALING.scale_in_cooldown_seconds
    assert run.series["tasks"][-1] == run.actions[-1].new  # idle tasks really stopped


def test_fleet_at_zero_activates_on_the_first_message_until_a_task_shows_up() -> None:
    deployment = on_demand(min_tasks=0)
    run = simulate_workers(
        np.asarray([30.0]),
        np.asarray([600.0]),
        ConfiguredPolicy(deployment=deployment),
        deployment,
        window=(0.0, 3600.0),
        start=0.0,
        drain_after_seconds=math.inf,
    )

    activation = run.actions[0]
    assert (activation.old, activation.new) == (0, SCALING.activation_tasks)
    assert activation.time == PERIOD + LAG  # first sample showing the message, seen late
    assert run.waits[0] == pytest.approx(activation.time + SCALING.task_startup_seconds - 30.0)
    # Activation watches RunningTaskCount, so it repeats every cooldown until the first
    # task's start is visible through the metric delay.
    repeats = math.ceil(
        (SCALING.task_startup_seconds + LAG) / max(SCALING.scale_out_cooldown_seconds, PERIOD)
    )
    assert max(a.new for a in run.actions) == repeats * SCALING.activation_tasks


@pytest.mark.parametrize("protected", [False, True])
def test_cpu_policy_scales_in_busy_tasks_unless_protected(protected: bool) -> None:
    # Ten tasks, one long job each: 25% CPU, well under a 70% target, so target
    # tracking scales in although every task is busy.
    tasks = 10
    deployment = on_demand()
    run = simulate_workers(
        np.zeros(tasks),
        np.full(tasks, LONG),
        CpuTargetPolicy(deployment=deployment, protected=protected),
        deployment,
        window=(0.0, 2 * 3600.0),
        start=0.0,
        initial_tasks=tasks,
        drain_after_seconds=math.inf,
    )

    assert run.actions
    assert run.actions[0].new < tasks
    if protected:
        assert run.jobs_retried_scale_in == 0
        assert run.series["tasks"][-1] == tasks  # nobody idle, nobody stopped
    else:
        stopped = tasks - run.actions[0].new
        assert run.jobs_retried_scale_in >= stopped
        assert run.lost_slot_seconds > 0
    assert run.unfinished == 0  # released jobs were retried and finished in the drain


def test_spot_reclaims_release_long_jobs_for_a_retry_and_spare_short_ones() -> None:
    deployment = replace(
        DEFAULT_DEPLOYMENT, worker=replace(DEFAULT_DEPLOYMENT.worker, on_demand_base=0)
    )
    grace = deployment.shutdown_grace_seconds
    times = np.linspace(0, 6 * 3600, 400)

    def run_with(duration: float) -> WorkerRun:
        return simulate_workers(
            times,
            np.full(times.size, duration),
            FixedFleet(tasks=10),
            deployment,
            window=(0.0, 8 * 3600.0),
            spot_interruptions_per_hour=1.0,
            seed=5,
            start=0.0,
            drain_after_seconds=math.inf,
        )

    long_run = run_with(1800.0)
    assert long_run.spot_reclaims > 0
    assert long_run.jobs_retried_spot > 0
    assert long_run.unfinished == 0
    assert long_run.dead_lettered == 0
    assert long_run.sqs2.deletes == times.size  # every job finished exactly once

    short_run = run_with(grace - 1.0)
    assert short_run.spot_reclaims > 0
    assert short_run.jobs_retried_spot == 0  # finished inside the shutdown grace


def test_job_released_max_receive_count_times_is_dead_lettered() -> None:
    deployment = replace(
        DEFAULT_DEPLOYMENT, worker=replace(DEFAULT_DEPLOYMENT.worker, on_demand_base=0)
    )
    run = simulate_workers(
        np.asarray([0.0]),
        np.asarray([LONG]),
        FixedFleet(tasks=1),
        deployment,
        window=(0.0, 3600.0),
        spot_interruptions_per_hour=120.0,  # reclaimed every 30 s on average
        seed=3,
        start=0.0,
        drain_after_seconds=math.inf,
    )

    assert run.dead_lettered == 1
    assert run.releases == deployment.jobs_queue.max_receive_count
    assert run.unfinished == 0


# ---------------------------------------------------- issue 17: bounded task lifetime


def _saturating_load(tasks: int, hours: float, job_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Enough jobs arriving steadily to keep ``tasks`` tasks busy for ``hours``."""
    rate = tasks * SLOTS / job_seconds * 1.5  # more than the fleet can take: never idle
    times = np.arange(0.0, hours * 3600.0, 1.0 / rate)
    return times, np.full(times.size, job_seconds)


def test_without_a_maximum_age_a_busy_fleet_blocks_a_deployment() -> None:
    # What issue 17 reported: protected, always-busy old tasks never leave.
    times, durations = _saturating_load(4, 8, 600.0)
    run = simulate_workers(
        times,
        durations,
        FixedFleet(tasks=4),
        on_demand(),
        window=(0.0, 8 * 3600.0),
        drain_seconds=0.0,
        initial_tasks=4,
        deploy_at=3600.0,
        drain_after_seconds=math.inf,
    )
    assert run.deployment_seconds is None  # still waiting when the load ended


def test_a_deployment_under_load_finishes_within_the_release_bound() -> None:
    times, durations = _saturating_load(4, 8, 600.0)
    run = simulate_workers(
        times,
        durations,
        FixedFleet(tasks=4),
        on_demand(),
        window=(0.0, 8 * 3600.0),
        drain_seconds=0.0,
        initial_tasks=4,
        deploy_at=3600.0,
    )
    assert run.deployment_seconds is not None
    # Old tasks drain at their maximum age (ready at 0, so at 30 min after the deploy
    # at 1 h) and their 10-minute jobs end well inside the grace.
    assert run.deployment_seconds <= SCALING.release_bound_minutes * 60
    assert run.deployment_seconds <= (SCALING.drain_after_minutes * 60 + 600.0)
    assert run.dead_lettered == 0


def test_tasks_recycle_at_their_maximum_age_without_losing_jobs() -> None:
    times, durations = _saturating_load(4, 6, 600.0)
    run = simulate_workers(
        times,
        durations,
        FixedFleet(tasks=4),
        on_demand(),
        window=(0.0, 6 * 3600.0),
        drain_seconds=0.0,
        initial_tasks=4,
    )
    # Each task drains every ~30 min + its last job: 4 tasks over 6 h drain many times.
    assert run.age_drains >= 4 * 6 * 60 // (SCALING.drain_after_minutes + 10) - 4
    assert run.jobs_retried_age == 0  # 10-minute jobs always fit in the grace
    assert run.dead_lettered == 0


def test_a_job_longer_than_the_drain_grace_is_released_by_the_age_drain() -> None:
    # The trade-off ADR 0007 states: jobs beyond drain_after + drain_grace cannot finish.
    long = float(SCALING.drain_after_minutes + SCALING.drain_grace_minutes + 30) * 60
    run = simulate_workers(
        np.array([0.0]),
        np.array([long]),
        FixedFleet(tasks=1),
        on_demand(),
        window=(0.0, 3600.0),
        drain_seconds=long * 3,
        initial_tasks=1,
    )
    assert run.jobs_retried_age == 1


def test_surplus_busy_tasks_leave_after_scale_in_within_the_bound() -> None:
    # The fleet is scaled from 4 to 1 while every task is busy: protection keeps them,
    # the age drain lets the surplus go.
    times, durations = _saturating_load(4, 4, 600.0)

    class Shrink:
        name = "shrink"
        protect_busy = True

        def initial_tasks(self, start: float) -> int:
            return 4

        def controller(self) -> object:
            class C:
                def decide(self, now: float, samples: object, desired: int) -> int:
                    return 4 if now < 3600 else 1

            return C()

        description = "4 then 1"

    run = simulate_workers(
        times,
        durations,
        Shrink(),  # type: ignore[arg-type]
        on_demand(),
        window=(0.0, 4 * 3600.0),
        drain_seconds=0.0,
    )
    hours = np.asarray(run.series["hour"])
    tasks = np.asarray(run.series["tasks"])
    # Every task started at 0 drains at 30 min and again 30 min after its restart; the
    # surplus is gone once each has drained after 1 h and finished its 10-minute jobs.
    gone_by = 1.0 + (SCALING.drain_after_minutes + 15) / 60
    assert tasks[hours > gone_by].max() == 1
    assert tasks[hours < 1.0].min() == 4
