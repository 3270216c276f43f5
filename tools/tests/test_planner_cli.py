"""The planner end to end: reproducibility and the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exportpipe.tools.planner import (
    ArrivalCurve,
    PriceTable,
    RunOptions,
    Workload,
    main,
    run_plan,
)

SMALL_DAY = ["--events-per-day", "4000", "--files-per-export", "0.5"]


def small_workload() -> Workload:
    return Workload(arrivals=ArrivalCurve(events_per_day=4000), files_per_export=0.5)


def without_timings(report: dict[str, Any]) -> dict[str, Any]:
    for key in ("generate_seconds", "fanout_seconds"):
        report.pop(key)
    for policy in report["policies"]:
        policy.pop("sim_seconds")
    return report


def test_same_seed_gives_the_same_report() -> None:
    def plan(seed: int) -> dict[str, Any]:
        report = run_plan(small_workload(), RunOptions(seed=seed), PriceTable())
        return without_timings(report.to_json())

    first = plan(11)
    assert plan(11) == first
    assert plan(12) != first


def test_cli_writes_report_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main([*SMALL_DAY, "--seed", "4", "--out", str(tmp_path)])

    assert status == 0
    out = capsys.readouterr().out
    assert "cost/day TOTAL" in out
    assert "cost/day S3 + DynamoDB requests" in out
    assert "queue wait p95" in out
    assert "analysis check" in out
    report = json.loads((tmp_path / "plan.json").read_text())
    names = [p["name"] for p in report["policies"]]
    assert names[0] == "configured"
    for policy in report["policies"]:
        # Request cost is priced beside task cost, and counted in the total.
        assert policy["cost_requests"] > 0
        assert policy["cost_total"] >= policy["cost_requests"] + policy["cost_sqs"]
    assert "analysis" in names
    assert report["load"]["events"] == 4000
    png = (tmp_path / "plan.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_cli_price_override_moves_the_cost(tmp_path: Path) -> None:
    def total(*extra: str) -> float:
        assert (
            main([*SMALL_DAY, "--policies", "fixed", "--no-plot", "--out", str(tmp_path), *extra])
            == 0
        )
        return float(json.loads((tmp_path / "plan.json").read_text())["policies"][0]["cost_total"])

    assert total("--spot-discount", "0") > total() * 2


def test_cli_runs_a_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "burst.csv"
    trace.write_text("time_s,files,duration_s\n" + "".join(f"{60 + i},4,900\n" for i in range(50)))

    status = main(
        [
            "--trace",
            str(trace),
            "--policies",
            "configured,fixed",
            "--fixed-tasks",
            "5",
            "--no-plot",
            "--out",
            str(tmp_path),
        ]
    )

    assert status == 0
    report = json.loads((tmp_path / "plan.json").read_text())
    assert report["load"]["jobs"] == 200
    assert report["window_hours"] == 24  # a short trace is measured over its day
    configured = report["policies"][0]
    assert configured["unfinished"] == 0
    assert configured["scale_outs"] > 0
    assert f"trace {trace}: 50 export events -> 200 jobs" in capsys.readouterr().out


def test_cli_reports_a_bad_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("when\n1\n")

    assert main(["--trace", str(trace), "--out", str(tmp_path)]) == 2
    assert "no time_s column" in capsys.readouterr().err


def test_cli_rejects_an_unknown_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SMALL_DAY, "--policies", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown policies" in capsys.readouterr().err
