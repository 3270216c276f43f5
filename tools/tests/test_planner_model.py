"""The planner's inputs: arrival curve, price table, orchestrator fan-out, traces."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.tools.planner import (
    ArrivalCurve,
    EventStream,
    FixedFleet,
    PriceTable,
    RunOptions,
    SqsCounts,
    TraceError,
    Workload,
    generate_day,
    load_trace,
    simulate_fanout,
    simulate_workers,
)
from exportpipe.tools.planner.report import analysis_check


def test_arrival_curve_has_the_requested_mean_and_peak() -> None:
    curve = ArrivalCurve(peak_factor=5.0, peak_hour=14.0)
    hours = np.linspace(0, 24, 24 * 600, endpoint=False)
    rates = np.array([curve.relative_rate(h) for h in hours])

    assert rates.mean() == pytest.approx(1.0, rel=1e-3)
    assert rates.max() == pytest.approx(5.0, rel=1e-3)
    assert hours[rates.argmax()] == pytest.approx(14.0, abs=0.01)
    assert rates.min() > 0


def test_a_peak_too_wide_for_its_height_is_rejected() -> None:
    with pytest.raises(ValueError, match="narrow the peak"):
        ArrivalCurve(peak_factor=5.0, peak_width_hours=6.0)


def test_generated_day_follows_the_curve() -> None:
    workload = Workload(arrivals=ArrivalCurve(events_per_day=20_000), files_per_export=1.0)
    stream = generate_day(workload, RunOptions(seed=2, warmup_days=1))

    assert stream.times.size == 40_000
    assert np.all(np.diff(stream.times) >= 0)
    assert stream.in_window()[0] == 20_000
    day = stream.times[stream.times >= 0] / 3600
    peak_share = np.mean(np.abs(day - 14.0) < 1.0)
    expected = np.mean([workload.arrivals.relative_rate(h) for h in np.linspace(13, 15, 200)]) / 12
    assert peak_share == pytest.approx(expected, rel=0.1)
    assert stream.durations.size == stream.files.sum()


def test_price_table_prices_a_worker_task_hour() -> None:
    prices = PriceTable()
    worker = DEFAULT_DEPLOYMENT.worker
    on_demand = 2 * 0.03238 + 4 * 0.00356 + (worker.ephemeral_storage_gib - 20) * 0.000111

    assert prices.task_hour(worker) == pytest.approx(on_demand)
    assert prices.task_hour(worker, spot=True) == pytest.approx(on_demand * 0.3)
    assert prices.sqs(2_500_000) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="spot_discount"):
        PriceTable(spot_discount=1.5)


def test_analysis_scenario_recomputed_with_list_prices() -> None:
    check = analysis_check(PriceTable(), concurrency=4)
    task_hour = 2 * 0.03238 + 4 * 0.00356

    assert check.workers_base_per_day == pytest.approx(15 * 12 * task_hour)
    assert check.workers_peak_per_day == pytest.approx(50 * 4 * task_hour)
    assert check.orchestrator_per_day == pytest.approx(2 * 24 * (0.5 * 0.03238 + 0.5 * 0.00356))
    # $38.60 at x86 prices; the services run ARM64 (Graviton) since issue 17.
    assert check.total_per_day == pytest.approx(30.88, abs=0.01)
    assert check.slot_hours == 380 * 4


def test_fanout_walks_pages_and_batches_jobs() -> None:
    stream = EventStream(
        times=np.array([10.0, 20.0]),
        files=np.array([250, 0], dtype=np.int64),
        durations=np.arange(250, dtype=np.float64) + 1,
        window=(0.0, 3600.0),
    )
    workload = Workload(files_per_page=100, page_seconds=2.0)

    result = simulate_fanout(stream, DEFAULT_DEPLOYMENT, workload)

    assert result.job_times.size == 250
    # Three pages, one after the other: jobs land at 12, 14 and 16 s.
    assert sorted(set(result.job_times.tolist())) == [12.0, 14.0, 16.0]
    assert sorted(result.job_durations.tolist()) == list(range(1, 251))
    assert result.sqs1.sends == 2 + 2  # two export events, two continuations
    assert result.sqs1.receives == result.sqs1.deletes == 3 + 1  # the empty export: a page
    assert result.sqs2_send_batches == 10 + 10 + 5
    assert result.task_seconds == pytest.approx(3600.0 * DEFAULT_DEPLOYMENT.orchestrator.min_tasks)


def test_trace_fills_missing_columns_and_sets_the_window(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,files,duration_s\n7200,3,120\n60,,\n")

    stream = load_trace(trace, Workload(files_per_export=2.0), RunOptions(warmup_days=0))

    assert stream.times.tolist() == [60.0, 7200.0]
    assert stream.files[1] == 3
    assert stream.durations[-3:].tolist() == [120.0, 120.0, 120.0]
    assert stream.window == (0.0, 86400.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,files\n1,2\n", "no time_s column"),
        ("time_s\n-5\n", "line 2"),
        ("time_s\n", "no events"),
    ],
)
def test_bad_trace_is_a_named_error(tmp_path: Path, text: str, message: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(text)

    with pytest.raises(TraceError, match=message):
        load_trace(trace, Workload(), RunOptions(warmup_days=0))


def test_worker_requests_follow_the_consumer_runtime() -> None:
    deployment = replace(DEFAULT_DEPLOYMENT, worker=replace(DEFAULT_DEPLOYMENT.worker, spot=False))
    queue = deployment.jobs_queue

    def run(jobs: int) -> SqsCounts:
        return simulate_workers(
            np.zeros(jobs),
            np.full(jobs, 600.0),
            FixedFleet(tasks=1),
            deployment,
            window=(0.0, 3600.0),
            start=0.0,
            drain_after_seconds=math.inf,
        ).sqs2

    one, four = run(1), run(4)
    # One ChangeMessageVisibilityBatch per busy task per heartbeat, however many jobs.
    assert one.visibility_changes == four.visibility_changes == 600 // queue.heartbeat_seconds
    assert (four.receives, four.deletes) == (4, 4)
    # One long poll per wait time while the task has a free slot and SQS 2 is empty.
    assert one.empty_receives == 3600 // queue.wait_time_seconds
    assert four.empty_receives == (3600 - 600) // queue.wait_time_seconds


def test_request_prices_price_a_small_file() -> None:
    """Two PUTs, two GETs and 5 DynamoDB write units per file (ADR 0015), at list prices."""
    prices = PriceTable()
    per_million = prices.file_requests(1_000_000)
    assert per_million == pytest.approx(2 * 5.0 + 2 * 0.4 + 5 * 0.625)
    assert PriceTable(s3_put_per_1000=0.01).file_requests(1_000_000) > per_million
    with pytest.raises(ValueError, match="prices"):
        PriceTable(dynamodb_wru_per_million=-1)
