"""``python -m bench.faults [--seed N] [--files N] [--workers N] [--duration S] ...``.

Exit status: 0 when every must-be-zero figure of the ledger is zero, 1 when one is not,
2 when the run could not be set up (bad arguments, the local stack did not start), 130
when interrupted (the stack and every process are stopped first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.faults.run import Options, describe_plan, plan_run, run
from bench.faults.schedule import KINDS
from exportpipe.tools.errors import CliError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description="Fault-injection run with a loss ledger (see bench/faults/README.md).",
    )
    defaults = Options()
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds export + schedule")
    parser.add_argument("--files", type=int, default=defaults.files, help="files in the export")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="jobs per worker process"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=defaults.duration,
        help="seconds over which faults are scheduled",
    )
    parser.add_argument(
        "--kinds",
        help=f"comma-separated fault kinds to schedule (default all: {', '.join(KINDS)})",
    )
    parser.add_argument(
        "--timeout", type=float, default=defaults.timeout, help="give up on the export after"
    )
    parser.add_argument("--state-dir", type=Path, help="keep state and logs here")
    parser.add_argument("--keep", action="store_true", help="keep state and logs after a pass")
    parser.add_argument("--json", type=Path, help="also write the ledger as JSON to this file")
    parser.add_argument(
        "--plan-only", action="store_true", help="print the export and the schedule, run nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run and print the ledger; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        options = Options(
            seed=args.seed,
            files=args.files,
            workers=args.workers,
            concurrency=args.concurrency,
            duration=args.duration,
            kinds=[k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None,
            timeout=args.timeout,
            state_dir=args.state_dir,
            keep=args.keep,
        )
        if args.plan_only:
            plan, events = plan_run(options)
            print(describe_plan(options, plan, events))
            return 0
        ledger = run(options)
    except (ValueError, CliError) as exc:
        print(f"bench.faults: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # everything was stopped on the way out
        print("bench.faults: interrupted", file=sys.stderr)
        return 130
    print(ledger.format())
    if args.json is not None:
        args.json.write_text(json.dumps(ledger.to_json(), indent=2) + "\n")
    return 1 if ledger.failures else 0


if __name__ == "__main__":
    sys.exit(main())
