"""Worker lifetime bound (issue 17): what the age drain costs, and how long a deployment takes.

Run: ``uv run python -m bench.worker_lifetime [--seed 1]``.

Simulates the planner's default day (``exportpipe plan``'s workload) under the
configured scaling policy with several ``drain_after`` / ``drain_grace`` settings
(``math.inf``: no age drain, as before issue 17), each without and with a worker
deployment at 14:00 UTC (the peak), and prints worker cost per day (Fargate only),
peak tasks, queue-wait p95, age drains, jobs released by a drain, dead letters and the
deployment's duration (until the last old task stopped). A simulation: figures are
deterministic for a seed, not timings.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.tools.planner.config import RunOptions, Workload
from exportpipe.tools.planner.fanout import simulate_fanout
from exportpipe.tools.planner.plan import default_policies
from exportpipe.tools.planner.prices import PriceTable
from exportpipe.tools.planner.report import offered_load
from exportpipe.tools.planner.simulator import simulate_workers
from exportpipe.tools.planner.workload import generate_day

_SCALING = DEFAULT_DEPLOYMENT.worker_scaling
SETTINGS = [
    ("no age drain (before issue 17)", math.inf, math.inf),
    (
        f"{_SCALING.drain_after_minutes}/{_SCALING.drain_grace_minutes} min (configured)",
        _SCALING.drain_after_minutes * 60.0,
        _SCALING.drain_grace_minutes * 60.0,
    ),
    ("60/270 min", 3600.0, 270 * 60.0),
    ("120/300 min", 7200.0, 300 * 60.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    deployment = DEFAULT_DEPLOYMENT
    workload, options = Workload(), RunOptions(seed=args.seed)
    stream = generate_day(workload, options)
    fanout = simulate_fanout(stream, deployment, workload)
    load = offered_load(stream, fanout, deployment)
    (policy,) = default_policies(
        deployment, load, peak_hour=workload.arrivals.peak_hour, keys=["configured"]
    )
    prices = PriceTable()
    spot = prices.task_hour(deployment.worker, spot=True)
    on_demand = prices.task_hour(deployment.worker)
    deploy_at = stream.window[0] + workload.arrivals.peak_hour * 3600.0
    jobs = fanout.job_times.size
    print(f"seed {args.seed}: {jobs:,} jobs simulated (warm-up included), configured policy")
    print(
        f"{'drain after/grace':34s} {'deploy':>6s} {'$/day':>7s} {'peak':>5s} {'p95':>6s} "
        f"{'drains':>6s} {'released':>8s} {'DLQ':>4s} {'deployment':>10s}"
    )
    for label, after, grace in SETTINGS:
        for deploy in (None, deploy_at):
            run = simulate_workers(
                fanout.job_times,
                fanout.job_durations,
                policy,
                deployment,
                window=stream.window,
                spot_interruptions_per_hour=workload.spot_interruptions_per_hour,
                seed=args.seed,
                drain_seconds=options.drain_seconds,
                drain_after_seconds=after,
                drain_grace_seconds=grace,
                deploy_at=deploy,
            )
            cost = (
                run.spot_task_seconds / 3600 * spot + run.on_demand_task_seconds / 3600 * on_demand
            )
            took = (
                "-"
                if deploy is None
                else "not done"
                if run.deployment_seconds is None
                else f"{run.deployment_seconds / 60:.0f} min"
            )
            print(
                f"{label:34s} {'14:00' if deploy else '-':>6s} {cost:7.2f} {run.peak_tasks:5d} "
                f"{np.percentile(run.waits, 95):5.0f}s {run.age_drains:6d} "
                f"{run.jobs_retried_age:8d} {run.dead_lettered:4d} {took:>10s}"
            )


if __name__ == "__main__":
    main()
