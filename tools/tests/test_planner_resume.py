"""The planner counts job-hours lost to reclaims and drains, with and without resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.tools.planner import FixedFleet, simulate_workers
from exportpipe.tools.planner.simulator import RESUME_LOSS_SECONDS


def test_reclaimed_long_jobs_lose_their_elapsed_time_or_only_the_resume_loss() -> None:
    deployment = replace(
        DEFAULT_DEPLOYMENT, worker=replace(DEFAULT_DEPLOYMENT.worker, on_demand_base=0)
    )
    times = np.linspace(0, 6 * 3600, 400)
    run = simulate_workers(
        times,
        np.full(times.size, 1800.0),
        FixedFleet(tasks=10),
        deployment,
        window=(0.0, 8 * 3600.0),
        spot_interruptions_per_hour=1.0,
        seed=5,
        start=0.0,
    )
    assert run.releases > 0
    lost, resumed = run.lost_seconds["spot"], run.lost_seconds_resumed["spot"]
    assert lost == pytest.approx(run.lost_slot_seconds)  # only Spot reclaims released jobs
    assert resumed <= run.releases * RESUME_LOSS_SECONDS
    assert resumed < lost / 10  # half-hour jobs lose minutes each without resume
    assert "scale-in" not in run.lost_seconds
