"""Fair-queue delivery in the planner, and the whale scenario (issue 20, ADR 0018)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exportpipe.tools.planner import main as plan_main
from exportpipe.tools.planner.fairqueue import NOISY_MIN_IN_FLIGHT, TenantQueue
from exportpipe.tools.planner.whale import (
    TARGET_FACTOR,
    WhaleReport,
    WhaleScenario,
    format_whale,
    run_whale,
)

# ------------------------------------------------------------------ the rules


def _in_flight(queue: TenantQueue, tenant: str, count: int, now: float = 0.0) -> None:
    for _ in range(count):
        queue.started(tenant, now)


def test_noisy_by_in_flight_share_needs_both_share_and_thirty() -> None:
    queue = TenantQueue(fair=True)
    _in_flight(queue, "whale", NOISY_MIN_IN_FLIGHT)
    _in_flight(queue, "others", 200)
    # 30 of 230 in flight is 13 % with 30 of its own: noisy at once (no history needed).
    assert queue.is_noisy("whale", 0.0)

    small = TenantQueue(fair=True)
    _in_flight(small, "busy", NOISY_MIN_IN_FLIGHT - 1)
    _in_flight(small, "others", 10)
    # 29 of 39 is 74 %, but fewer than 30: not by the in-flight rule (no history yet).
    assert not small.is_noisy("busy", 0.0)

    crowd = TenantQueue(fair=True)
    _in_flight(crowd, "big", 40)
    _in_flight(crowd, "others", 400)
    assert not crowd.is_noisy("big", 0.0)  # 40 of 440 is 9 %: not noisy


def test_noisy_by_recent_processing_time_share() -> None:
    queue = TenantQueue(fair=True, recent_seconds=300)
    _in_flight(queue, "others", 17, now=0.0)
    _in_flight(queue, "slow", 3, now=3000.0)  # few messages, but long ones
    # Just started: the others' recent processing time dominates.
    assert queue.processing_share("slow", 3010.0) < 0.1
    assert not queue.is_noisy("slow", 3010.0)
    # Held for many time constants: 3 of 20 = 15 % of processing time, never 30 in flight.
    assert queue.processing_share("slow", 6000.0) == pytest.approx(0.15, abs=0.01)
    assert queue.is_noisy("slow", 6000.0)
    # It finishes; the others keep going: its share decays and it becomes quiet again.
    for _ in range(3):
        queue.finished("slow", 6000.0)
    assert not queue.is_noisy("slow", 9000.0)
    assert queue.noisy_tenants(9000.0) == ["others"]  # 100 % of the time share


@pytest.mark.parametrize("fair", [False, True])
def test_quiet_tenants_are_delivered_before_a_noisy_one(fair: bool) -> None:
    queue = TenantQueue(fair=fair)
    _in_flight(queue, "whale", 100)
    _in_flight(queue, "small-a", 2)
    for i in range(50):
        queue.push("whale", float(i), i)
    queue.push("small-b", 60.0, 1000)
    queue.push("small-a", 61.0, 1001)

    order = [queue.pop(62.0) for _ in range(4)]

    tenants = [o[0] for o in order if o is not None]
    if fair:
        # The whale is noisy: both small tenants first (oldest first among them).
        assert tenants == ["small-b", "small-a", "whale", "whale"]
    else:
        assert tenants == ["whale"] * 4  # a plain queue: oldest first
    assert len(queue) == 48


def test_only_noisy_tenants_waiting_still_get_delivered_oldest_first() -> None:
    queue = TenantQueue(fair=True)
    _in_flight(queue, "a", 60)
    _in_flight(queue, "b", 60)
    queue.push("b", 1.0, 1)
    queue.push("a", 2.0, 2)
    assert queue.pop(3.0) == ("b", 1.0, 1)
    assert queue.pop(3.0) == ("a", 2.0, 2)
    assert queue.pop(3.0) is None


@pytest.mark.parametrize("fair", [False, True])
def test_oldest_visible_time_and_every_visible_message(fair: bool) -> None:
    # What the simulator reads for the oldest-message alarm and for jobs still queued.
    queue = TenantQueue(fair=fair)
    assert queue.oldest_visible_at() is None
    queue.push("b", 5.0, 2)
    queue.push("a", 7.0, 3)
    queue.push("b", 8.0, 4)
    assert queue.oldest_visible_at() == 5.0
    assert sorted(queue.messages()) == [2, 3, 4]
    assert queue.pop(9.0) == ("b", 5.0, 2)
    assert queue.oldest_visible_at() == 7.0
    assert sorted(queue.messages()) == [3, 4]


# ---------------------------------------------------------------- the scenario

SMALL = WhaleScenario(
    small_tenants=12, exports_per_tenant=6, files_per_export=20, whale_files=30_000, seed=3
)


@pytest.fixture(scope="module")
def report() -> WhaleReport:
    return run_whale(SMALL)


def test_same_small_tenants_with_and_without_the_whale(report: WhaleReport) -> None:
    sizes = {r.name: r.small_waits.size for r in report.runs}
    assert set(sizes.values()) == {report.small_jobs}
    assert report.run("no whale").whale_done is None
    assert report.run("whale").whale_done is not None


def test_whale_starves_small_tenants_without_fair_queues_not_with_them(report: WhaleReport) -> None:
    plain, fair = report.run("whale"), report.run("whale, fair")
    baseline = report.run("no whale, fair").wait_percentile(95)
    # Without message groups the small tenants queue behind the whale's backlog: hours.
    assert plain.wait_percentile(95) > 3600
    assert plain.wait_percentile(95) > 20 * max(baseline, 60)
    # With fair queues they keep (close to) their ordinary day: the target.
    assert fair.wait_percentile(95) <= TARGET_FACTOR * baseline
    assert report.target_met
    # The whale still finishes, somewhat later than when it could cut in line.
    assert plain.whale_done is not None
    assert fair.whale_done is not None
    assert fair.whale_done >= plain.whale_done
    assert fair.whale_done - plain.whale_done < 0.25 * (plain.whale_done - 10 * 3600)
    # Fair queues cost no extra fleet: the same work runs in a different order.
    assert fair.task_hours == pytest.approx(plain.task_hours, rel=0.05)
    assert max(fair.series["noisy"]) >= 1  # the whale was marked noisy


def test_report_text_and_json(report: WhaleReport) -> None:
    text = format_whale(report)
    for needle in (
        "small tenants' wait p50",
        "small tenants' wait p95",
        "whale's completion time",
        "no whale, fair",
        "target:",
        "MET",
    ):
        assert needle in text
    data = json.loads(json.dumps(report.to_json()))
    assert [r["name"] for r in data["runs"]] == [
        "no whale",
        "no whale, fair",
        "whale",
        "whale, fair",
    ]
    assert data["target_met"] is True
    assert len(data["runs"][0]["hourly_p95_s"]) == 24


def test_same_seed_same_figures() -> None:
    scenario = WhaleScenario(small_tenants=4, exports_per_tenant=3, whale_files=2_000, seed=9)
    first = [r.summary() for r in run_whale(scenario).runs]
    second = [r.summary() for r in run_whale(scenario).runs]
    for a, b in zip(first, second, strict=True):
        a.pop("sim_seconds")
        b.pop("sim_seconds")
    assert first == second
    assert not np.isnan(first[2]["small_wait_p95_s"])


def test_exportpipe_plan_whale_writes_json_and_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["whale", "--small-tenants", "5", "--exports-per-tenant", "3", "--whale-files"]
    status = plan_main([*argv, "3000", "--seed", "2", "--out", str(tmp_path)])
    assert status == 0
    out = capsys.readouterr().out
    assert "small tenants' wait p95" in out
    assert json.loads((tmp_path / "whale.json").read_text())["scenario"]["whale_files"] == 3000
    assert (tmp_path / "whale.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_exportpipe_cli_reaches_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from exportpipe.tools import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["plan", "whale", "--help"])
    assert done.value.code == 0
    assert "exportpipe plan whale" in capsys.readouterr().out


def test_bad_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_main(["whale", "--whale-hour", "25", "--no-plot"]) == 2
    assert "whale_hour" in capsys.readouterr().err
