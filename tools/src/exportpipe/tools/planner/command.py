"""``exportpipe plan``: the capacity and cost planner's command line.

Prints the side-by-side report and writes ``plan.json`` and ``plan.png`` to ``--out``.
Exit status 0 on success, 2 on bad options or an unreadable trace.

``exportpipe plan whale ...`` runs the fair-sharing scenario instead
(:mod:`exportpipe.tools.planner.whale`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Any

from exportpipe.tools.planner.config import ArrivalCurve, DurationModel, RunOptions, Workload
from exportpipe.tools.planner.plan import POLICY_KEYS, run_plan
from exportpipe.tools.planner.plot import render_png
from exportpipe.tools.planner.prices import PriceTable
from exportpipe.tools.planner.report import format_report

__all__ = ["build_parser", "main", "option", "publish"]

DEFAULT_OUT = Path(".exportpipe/plan")


def option(group: Any, flag: str, default: Any, help: str | None = None) -> None:
    """Add ``flag`` with ``default``, typed like it (the config field's default)."""
    group.add_argument(flag, type=type(default), default=default, help=help)


def build_parser() -> argparse.ArgumentParser:
    """The planner's options; defaults come from the config dataclasses."""
    arr, dur, wl, opt, pr = ArrivalCurve(), DurationModel(), Workload(), RunOptions(), PriceTable()
    p = argparse.ArgumentParser(
        prog="exportpipe plan",
        description=(
            "Simulate a production day of export events against the worker scaling policy "
            "in exportpipe.common.sizing and alternatives; print task-hours, SQS requests, "
            "cost per day and queue waits side by side; write plan.json and plan.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Scenario: `exportpipe plan whale --help` (one tenant's huge export, fair queues).",
    )
    g = p.add_argument_group("workload")
    option(g, "--seed", opt.seed, "seed for every random draw")
    option(g, "--events-per-day", arr.events_per_day)
    option(g, "--peak-factor", arr.peak_factor, "highest arrival rate over the day's mean")
    option(g, "--peak-hour", arr.peak_hour, "UTC hour of the peak")
    option(g, "--peak-width-hours", arr.peak_width_hours, "full width at half maximum of the peak")
    option(
        g, "--diurnal-amplitude", arr.diurnal_amplitude, "relative swing of the day/night baseline"
    )
    option(
        g,
        "--files-per-export",
        wl.files_per_export,
        "mean download jobs per export event (Poisson)",
    )
    option(g, "--files-per-page", wl.files_per_page)
    option(g, "--page-seconds", wl.page_seconds, "orchestrator time per Export API page")
    g.add_argument("--duration-dist", choices=("lognormal", "exponential"), default=dur.kind)
    option(g, "--duration-median-minutes", dur.median_seconds / 60)
    option(g, "--duration-sigma", dur.sigma)
    option(
        g, "--duration-mean-minutes", dur.mean_seconds / 60, "mean of the exponential distribution"
    )
    option(g, "--duration-min-minutes", dur.min_seconds / 60)
    option(g, "--duration-max-hours", dur.max_seconds / 3600)
    option(
        g,
        "--spot-interruptions-per-hour",
        wl.spot_interruptions_per_hour,
        "Fargate Spot reclaims per Spot task-hour",
    )
    g.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="CSV of export events (time_s[,files][,duration_s]) instead of a day",
    )
    g.add_argument(
        "--warmup-days",
        type=int,
        default=None,
        help=f"days simulated before the measured one (default {opt.warmup_days}; 0 with --trace)",
    )
    g = p.add_argument_group("prices (us-east-1 defaults taken 2026-11-29)")
    option(g, "--price-vcpu-hour", pr.vcpu_hour)
    option(g, "--price-gb-hour", pr.gb_hour)
    option(g, "--price-storage-gb-hour", pr.storage_gb_hour)
    option(g, "--spot-discount", pr.spot_discount)
    option(g, "--sqs-per-million", pr.sqs_per_million)
    option(g, "--s3-put-per-1000", pr.s3_put_per_1000)
    option(g, "--s3-get-per-1000", pr.s3_get_per_1000)
    option(g, "--dynamodb-wru-per-million", pr.dynamodb_wru_per_million)
    g = p.add_argument_group("policies")
    g.add_argument(
        "--policies", default=",".join(POLICY_KEYS), help="comma-separated subset, in column order"
    )
    option(g, "--cpu-target", 70.0, "target CPU percent of the CPU-only policies")
    g.add_argument(
        "--fixed-tasks",
        type=int,
        default=None,
        help="fixed fleet size (default: the peak hour's need at 80%% busy)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for plan.json and plan.png"
    )
    g.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the planner; return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["whale"]:
        from exportpipe.tools.planner.whale import main as whale_main

        return whale_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        workload = Workload(
            # Each of the curve's fields has an option of its own name.
            arrivals=ArrivalCurve(**{f.name: getattr(args, f.name) for f in fields(ArrivalCurve)}),
            files_per_export=args.files_per_export,
            files_per_page=args.files_per_page,
            page_seconds=args.page_seconds,
            durations=DurationModel(
                kind=args.duration_dist,
                median_seconds=args.duration_median_minutes * 60,
                sigma=args.duration_sigma,
                mean_seconds=args.duration_mean_minutes * 60,
                min_seconds=args.duration_min_minutes * 60,
                max_seconds=args.duration_max_hours * 3600,
            ),
            spot_interruptions_per_hour=args.spot_interruptions_per_hour,
        )
        warmup = args.warmup_days
        if warmup is None:
            warmup = 0 if args.trace is not None else RunOptions().warmup_days
        options = RunOptions(seed=args.seed, warmup_days=warmup)
        prices = PriceTable(
            vcpu_hour=args.price_vcpu_hour,
            gb_hour=args.price_gb_hour,
            storage_gb_hour=args.price_storage_gb_hour,
            spot_discount=args.spot_discount,
            sqs_per_million=args.sqs_per_million,
            s3_put_per_1000=args.s3_put_per_1000,
            s3_get_per_1000=args.s3_get_per_1000,
            dynamodb_wru_per_million=args.dynamodb_wru_per_million,
        )
        keys = [k.strip() for k in args.policies.split(",") if k.strip()]
        if args.fixed_tasks is not None and args.fixed_tasks < 0:
            raise ValueError("--fixed-tasks must be >= 0")
        report = run_plan(
            workload,
            options,
            prices,
            trace=args.trace,
            policy_keys=keys,
            cpu_target=args.cpu_target,
            fixed_tasks=args.fixed_tasks,
        )
    except ValueError as exc:  # includes TraceError
        print(f"exportpipe plan: error: {exc}", file=sys.stderr)
        return 2
    render = None if args.no_plot else partial(render_png, report)
    return publish(args.out, "plan", format_report(report), report.to_json(), render)


def publish(
    out: Path, stem: str, text: str, data: dict[str, Any], render: Callable[[Path], Path] | None
) -> int:
    """Print ``text``, write ``<stem>.json`` and, with ``render``, ``<stem>.png`` to ``out``.

    Returns:
        0, the command's exit status.
    """
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nwrote {json_path}")
    if render is not None:
        print(f"wrote {render(out / f'{stem}.png')}")
    return 0
