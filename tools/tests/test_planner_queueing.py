"""The worker simulation against queueing theory, with a fixed fleet and no Spot."""

from __future__ import annotations

import heapq
import math
from dataclasses import replace

import numpy as np
import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, Deployment
from exportpipe.tools.planner import FixedFleet, simulate_workers
from exportpipe.tools.planner.fairqueue import OLDEST_FIRST, Delivery


def fixed_deployment(jobs_per_task: int) -> Deployment:
    # On-demand only (no reclaims); an hourly control tick, as nothing scales.
    return replace(
        DEFAULT_DEPLOYMENT,
        worker=replace(
            DEFAULT_DEPLOYMENT.worker, spot=False, concurrency=jobs_per_task, job_budget_bytes=None
        ),
        worker_scaling=replace(DEFAULT_DEPLOYMENT.worker_scaling, metric_period_seconds=3600),
    )


def erlang_c(servers: int, offered: float) -> float:
    """Probability an arrival waits in M/M/c with ``offered`` = lambda / mu Erlangs."""
    top = offered**servers / math.factorial(servers) * servers / (servers - offered)
    return top / (sum(offered**k / math.factorial(k) for k in range(servers)) + top)


def poisson_jobs(rate: float, mean_service: float, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.exponential(1 / rate, n)), rng.exponential(mean_service, n)


def test_fixed_fleet_mean_wait_matches_erlang_c() -> None:
    # M/M/4 at 60%: across seeds the simulated mean wait of 100,000 jobs has a 2% spread,
    # so 10% is a wide margin for noise and a tight one for a modelling error.
    tasks, servers, mean_service, utilisation = 4, 4, 60.0, 0.6
    rate = utilisation * servers / mean_service
    times, durations = poisson_jobs(rate, mean_service, 100_000, seed=20261129)
    window = (float(times[10_000]), float(times[-1]))  # skip the empty-queue start

    run = simulate_workers(
        times,
        durations,
        FixedFleet(tasks=tasks),
        fixed_deployment(1),
        window=window,
        start=0.0,
        drain_after_seconds=math.inf,
    )

    p_wait = erlang_c(servers, rate * mean_service)
    assert run.unfinished == 0
    assert run.releases == 0
    assert float(run.waits.mean()) == pytest.approx(
        p_wait / (servers / mean_service - rate), rel=0.1
    )
    assert float((run.waits > 0).mean()) == pytest.approx(p_wait, abs=0.015)


def test_fixed_fleet_waits_equal_fifo_multiserver_recursion() -> None:
    # A FIFO queue in front of c identical servers: each job starts when it arrives or
    # when the earliest server frees, whichever is later. The simulator (5 tasks x 2
    # slots, pollers taking turns) must give every job exactly that wait.
    times, durations = poisson_jobs(0.8 * 10 / 60.0, 60.0, 20_000, seed=7)
    free = [0.0] * 10
    expected = np.empty(times.size)
    for k, (arrival, duration) in enumerate(zip(times, durations, strict=True)):
        start = max(heapq.heappop(free), arrival)
        expected[k] = start - arrival
        heapq.heappush(free, start + duration)

    run = simulate_workers(
        times,
        durations,
        FixedFleet(tasks=5),
        fixed_deployment(2),
        window=(0.0, float(times[-1]) + 1),
        start=0.0,
        drain_after_seconds=math.inf,
    )

    np.testing.assert_allclose(run.waits, expected, atol=1e-6)
    assert expected.max() > 0  # the check is not vacuous: jobs did queue


@pytest.mark.parametrize("delivery", [OLDEST_FIRST, Delivery(fair=True)])
def test_delivery_order_oldest_first_or_fair_by_tenant(delivery: Delivery) -> None:
    # 2 tasks x 2 slots. A whale's 200 one-minute jobs land at 0 s, a small tenant's 4
    # at 1 s. Oldest first, the small jobs wait out the whale's 49 remaining rounds;
    # fair, the whale holds all recent processing time (noisy) and the small jobs take
    # the next free slots at 60 s. Either way the same work ends at the same time.
    times = np.concatenate([np.zeros(200), np.ones(4)])
    tenants = ["whale"] * 200 + ["small"] * 4

    run = simulate_workers(
        times,
        np.full(204, 60.0),
        FixedFleet(tasks=2),
        fixed_deployment(2),
        window=(0.0, math.inf),  # open: runs until the last job is done
        start=0.0,
        drain_after_seconds=math.inf,
        delivery=delivery,
        tenants=tenants,
    )

    assert run.unfinished == 0
    expected_small_wait = 59.0 if delivery.fair else 50 * 60.0 - 1.0
    np.testing.assert_allclose(run.waits[200:], expected_small_wait)
    np.testing.assert_allclose(run.first_receives[200:], 1.0 + expected_small_wait)
    assert float(run.ends.max()) == pytest.approx(51 * 60.0)
    assert ("noisy" in run.series) == delivery.fair


def test_tenants_must_match_the_jobs() -> None:
    with pytest.raises(ValueError, match="3 tenants for 2 jobs"):
        simulate_workers(
            np.zeros(2),
            np.ones(2),
            FixedFleet(tasks=1),
            fixed_deployment(1),
            window=(0.0, 10.0),
            tenants=["a", "b", "c"],
        )
