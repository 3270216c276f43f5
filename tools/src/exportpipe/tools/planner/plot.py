"""The planner's PNG: backlog, worker tasks and cumulative cost over the window."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from exportpipe.common.sizing import ServiceSizing
from exportpipe.tools.planner.prices import PriceTable
from exportpipe.tools.planner.report import PlanReport

__all__ = ["render_png", "stacked_axes"]


@contextmanager
def stacked_axes(path: Path, rows: int, **options: Any) -> Iterator[Any]:
    """``rows`` axes on one figure, drawn without a display and saved to ``path`` (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build machines; must precede pyplot
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, **options)
    yield axes
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_png(report: PlanReport, path: Path) -> Path:
    """Draw one line per policy on three stacked panels and save to ``path``.

    Panels: visible SQS 2 backlog (log scale), billed worker tasks, and cumulative cost
    (workers on their Spot/on-demand split, plus the window's orchestrator and SQS cost
    spread evenly).
    """
    prices = PriceTable(**report.prices)
    worker = report.deployment["worker"]
    sizing = ServiceSizing(**worker)
    od_rate = prices.task_hour(sizing)
    spot_rate = prices.task_hour(sizing, spot=True)
    with stacked_axes(path, 3, figsize=(11, 10), sharex=True) as (ax_q, ax_t, ax_c):
        for p in report.policies:
            s = p.series
            hours = s["hour"]
            if not hours:
                continue
            fixed_per_hour = (p.cost_orchestrator + p.cost_sqs) / 24.0
            cost = [
                sp * spot_rate + od * od_rate + h * fixed_per_hour
                for h, sp, od in zip(
                    hours, s["spot_task_hours"], s["on_demand_task_hours"], strict=True
                )
            ]
            ax_q.plot(hours, [max(v, 0.8) for v in s["visible"]], label=p.name, lw=1.2)
            ax_t.plot(hours, s["tasks"], label=p.name, lw=1.2)
            ax_c.plot(hours, cost, label=f"{p.name} (${p.cost_total:,.0f}/day)", lw=1.2)
        ax_q.set_yscale("log")
        ax_q.set_ylabel("visible SQS 2 messages")
        ax_q.set_title(
            f"exportpipe plan, seed {report.seed}: {report.load.events:,} export events, "
            f"{report.load.jobs:,} jobs, {report.load.job_hours:,.0f} job-hours"
        )
        ax_t.axhline(worker["max_tasks"], color="grey", ls=":", lw=1)
        ax_t.set_ylabel("worker tasks (billed)")
        ax_c.set_ylabel("cumulative cost, $")
        ax_c.set_xlabel("hour of the window (UTC)")
        for ax in (ax_q, ax_t, ax_c):
            ax.grid(True, alpha=0.3)
        ax_t.legend(loc="upper left", fontsize=8)
        ax_c.legend(loc="upper left", fontsize=8)
    return path
