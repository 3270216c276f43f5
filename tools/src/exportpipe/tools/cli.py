"""``exportpipe``: the operator CLI.

Commands (each one's help string below is its description; docs/operations.md has more):
``local up|ps|logs|down``, ``submit``, ``status``, ``dlq list|show|redrive``, ``plan``
(the planner's own parser), ``demo``.

Where settings come from: :mod:`exportpipe.tools.envfile`. Expected problems end in one
line on stderr and a non-zero exit status (:mod:`exportpipe.tools.errors`), never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from exportpipe.common.errors import AwsTransientError
from exportpipe.tools.context import Stack, translate_aws_error
from exportpipe.tools.envfile import DEFAULT_STATE_DIR
from exportpipe.tools.errors import EXIT_OK, CliError

__all__ = ["build_parser", "main"]

PROG = "exportpipe"


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (and exit 2) instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)")


def _stack(args: argparse.Namespace) -> Stack:
    stack = Stack.load(args.env_file)
    args.stack = stack  # lets main() name the endpoint if an AWS call fails
    stack.check_reachable()
    return stack


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


# ------------------------------------------------------------------- commands


def _cmd_local_up(args: argparse.Namespace) -> int:
    from exportpipe.tools.local import StackOptions, up
    from exportpipe.tools.local_services import load_exports, start_services

    exports = None if args.no_services else load_exports(args.exports)
    result = up(
        args.state_dir,
        StackOptions(max_receives=args.max_receives, visibility_timeout=args.visibility_timeout),
    )
    console = _out()
    how = "running" if result.reused else "started"
    console.print(
        f"local stack {how}: moto server pid {result.state.pid} on {result.state.endpoint}"
    )
    if exports is not None:
        services = start_services(
            args.state_dir, result.values, result.env_file, workers=args.workers, exports=exports
        )
        for record in services.records:
            how = "running" if record.name in services.kept else "started"
            where = f" on {record.url}" if record.url else ""
            console.print(f"  {record.name:<13} {how}: pid {record.pid}{where}")
        for name in services.stopped:
            if name not in services.started:
                console.print(f"  {name:<13} stopped")
        listed = ", ".join(e.export_id for e in exports.exports) or "none"
        console.print(f"simulator exports: {escape(listed)}")
    console.print(f"settings written to {escape(str(result.env_file))}")
    console.print(f"  services: EXPORTPIPE_ENV_FILE={escape(str(result.env_file))}")
    if args.state_dir.resolve() != (Path.cwd() / DEFAULT_STATE_DIR).resolve():
        console.print(f"  CLI:      exportpipe --env-file {escape(str(result.env_file))} ...")
    if exports is not None:
        console.print(
            "processes: `exportpipe local ps`; logs: `exportpipe local logs [SERVICE] -f`"
        )
    return EXIT_OK


def _cmd_local_down(args: argparse.Namespace) -> int:
    from exportpipe.tools.local import down
    from exportpipe.tools.local_services import stop_services

    console = _out()
    for record in stop_services(args.state_dir):
        console.print(f"stopped {record.name} (pid {record.pid})")
    state = down(args.state_dir)
    if state is None:
        console.print(f"no local stack running in {escape(str(args.state_dir))}")
    else:
        console.print(f"local stack stopped (moto server pid {state.pid} on {state.endpoint})")
    return EXIT_OK


def _cmd_local_ps(args: argparse.Namespace) -> int:
    from exportpipe.common.sqs import queue_depth
    from exportpipe.tools.local import read_state
    from exportpipe.tools.local_services import read_services

    state = read_state(args.state_dir.resolve())
    if state is None or not state.is_our_server():
        raise CliError(
            f"no local stack running in {args.state_dir} (start it with `exportpipe local up`)"
        )
    rows: list[dict[str, Any]] = [
        {"service": "moto", "pid": state.pid, "running": True, "url": state.endpoint},
    ]
    for record in read_services(args.state_dir.resolve()):
        rows.append(
            {
                "service": record.name,
                "pid": record.pid,
                "running": record.is_running(),
                "url": record.url,
                "log": _shown_path(Path(record.log_file)),
            }
        )
    stack = Stack.load(Path(state.env_file))
    sqs = stack.client("sqs")
    queues: dict[str, dict[str, int]] = {}
    for name in ("requests", "jobs"):
        for url, label in zip(stack.queue_urls(name), (name, f"{name}-dlq"), strict=True):
            depth = queue_depth(sqs, url)
            queues[label] = {"visible": depth.visible, "in_flight": depth.in_flight}
    if args.json:
        print(json.dumps({"processes": rows, "queues": queues}, indent=2))
        return EXIT_OK
    console = _out()
    table = Table(title=f"local stack in {escape(str(args.state_dir))}", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("pid", justify="right")
    table.add_column("state")
    table.add_column("url / log", overflow="fold")
    for row in rows:
        running = "[green]running[/]" if row["running"] else "[red]exited[/]"
        table.add_row(row["service"], str(row["pid"]), running, escape(row["url"] or row["log"]))
    console.print(table)
    depth_table = Table(title="queues", title_justify="left")
    depth_table.add_column("queue", no_wrap=True)
    depth_table.add_column("queued", justify="right")
    depth_table.add_column("in flight", justify="right")
    for label, counts in queues.items():
        depth_table.add_row(label, str(counts["visible"]), str(counts["in_flight"]))
    console.print(depth_table)
    return EXIT_OK


def _shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _cmd_local_logs(args: argparse.Namespace) -> int:
    from exportpipe.tools.local_services import follow, log_files
    from exportpipe.tools.processes import tail

    files = list(log_files(args.state_dir, args.service))
    width = max(len(name) for name, _ in files)
    out = sys.stdout

    def emit(name: str, line: str) -> None:
        out.write(f"{name:<{width}} | {line}\n" if len(files) > 1 else f"{line}\n")
        out.flush()

    for name, path in files:
        for line in tail(path, args.lines):
            emit(name, line)
    if args.follow:
        follow(files, emit)
    return EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from exportpipe.tools.status import stall_seconds_of
    from exportpipe.tools.submit import (
        DEFAULT_WAIT_SECONDS,
        exit_code_for,
        submit_export,
        wait_for_export,
    )

    stack = _stack(args)
    submitted = submit_export(stack, args.export_id, tenant=args.tenant, prefix=args.prefix)
    console = _out()
    console.print(
        f"submitted export {escape(submitted.export_id)} (message {submitted.message_id}); "
        f"output: {escape(submitted.output)}"
    )
    if not args.wait:
        return EXIT_OK
    state = wait_for_export(
        stack,
        args.export_id,
        console=console,
        timeout=args.timeout or DEFAULT_WAIT_SECONDS,
        stall_seconds=stall_seconds_of(stack),
    )
    line = f"export {escape(state.export_id)} {state.status}: {state.files_done} done"
    line += f", {state.files_rejected} rejected of {state.files_expected}"
    if state.manifest_key:
        line += f"; manifest s3://{state.bucket}/{escape(state.manifest_key)}"
    if state.failure_reason:
        line += f"; {escape(state.failure_reason)}"
    console.print(line)
    return exit_code_for(state)


def _cmd_status(args: argparse.Namespace) -> int:
    from exportpipe.tools.status import fetch_status, render_status, stall_seconds_of

    stack = _stack(args)
    stall = args.stall_seconds or stall_seconds_of(stack)
    status = fetch_status(stack, args.export_id, stall_seconds=stall)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        render_status(status, _out())
    return EXIT_OK


def _queues(args: argparse.Namespace) -> tuple[Any, ...]:
    from exportpipe.tools.dlq import QUEUES

    return QUEUES if args.queue is None else (args.queue,)


def _cmd_dlq_list(args: argparse.Namespace) -> int:
    from exportpipe.tools.dlq import list_dead_letters

    letters = list_dead_letters(_stack(args), _queues(args))
    if args.json:
        print(json.dumps([d.to_json() for d in letters], indent=2))
        return EXIT_OK
    console = _out()
    if not letters:
        console.print("no dead letters in " + ", ".join(f"{q} DLQ" for q in _queues(args)))
        return EXIT_OK
    table = Table(title=f"{len(letters)} dead letter(s)", title_justify="left")
    table.add_column("queue", no_wrap=True)
    table.add_column("message id / what", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("recv", justify="right")
    for d in letters:
        table.add_row(
            d.queue,
            f"{d.message_id}\n[dim]{escape(d.summary)}[/dim]",
            escape(d.reason),
            "" if d.receive_count is None else str(d.receive_count),
        )
    console.print(table)
    console.print("details: `exportpipe dlq show ID`; JSON: `exportpipe dlq list --json`")
    return EXIT_OK


def _cmd_dlq_show(args: argparse.Namespace) -> int:
    from exportpipe.tools.dlq import find_dead_letter, list_dead_letters

    letter = find_dead_letter(list_dead_letters(_stack(args), _queues(args)), args.message_id)
    if args.json:
        print(json.dumps({**letter.to_json(), "body": letter.shown_body()}, indent=2))
        return EXIT_OK
    console = _out()
    table = Table(show_header=False, title=f"dead letter {letter.message_id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in letter.to_json().items():
        table.add_row(name, escape("" if value is None else str(value)))
    console.print(table)
    console.print(escape(letter.shown_body()))
    return EXIT_OK


def _cmd_dlq_redrive(args: argparse.Namespace) -> int:
    from exportpipe.tools.dlq import redrive

    done = redrive(_stack(args), _queues(args), message_id=args.id)
    console = _out()
    if not done:
        console.print("nothing to redrive")
        return EXIT_OK
    for d in done:
        console.print(f"redrove {d.queue} {d.message_id} ({escape(d.reason)}; {escape(d.summary)})")
    console.print(f"{len(done)} message(s) sent back to their queue")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from exportpipe.tools.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            files=args.files,
            workers=args.workers,
            state_dir=args.state_dir,
            keep=args.keep,
            timeout=args.timeout,
        ),
        _out(),
    )


# --------------------------------------------------------------------- parser


def _number(convert: Callable[[str], Any], kind: str, ok: Callable[[Any], bool], must: str) -> Any:
    """An argparse ``type``: ``convert`` the value, then check it is ``ok``."""

    def parse(value: str) -> Any:
        try:
            number = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind}: {value!r}") from None
        if not ok(number):
            raise argparse.ArgumentTypeError(f"must be {must}: {value!r}")
        return number

    return parse


_positive = _number(float, "number", lambda n: n > 0, "positive")
_workers = _number(int, "whole number", lambda n: 0 <= n <= 16, "between 0 and 16")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``exportpipe``."""
    common = _Parser(add_help=False)
    parser = _Parser(prog=PROG, description="Operate exportpipe: local stack, exports, DLQs.")
    # Before or after the command; given after it, it wins (SUPPRESS: absent, not None).
    for where, default in ((parser, None), (common, argparse.SUPPRESS)):
        where.add_argument(
            "--env-file",
            type=Path,
            default=default,
            help="settings file (default: $EXPORTPIPE_ENV_FILE, then .exportpipe/local.env)",
        )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    local = sub.add_parser("local", help="the local system: up, ps, logs, down")
    local_sub = local.add_subparsers(dest="action", required=True, parser_class=_Parser)
    state_opt = _Parser(add_help=False)
    state_opt.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: .exportpipe"
    )
    local_up = local_sub.add_parser(
        "up",
        parents=[state_opt],
        help="start (or keep) moto, the simulator, an orchestrator and workers",
    )
    local_up.add_argument(
        "--workers", type=_workers, default=2, help="worker processes (default 2)"
    )
    local_up.add_argument(
        "--exports",
        type=Path,
        help="simulator spec file (see docs/simulator.md; default: exports `example` "
        "and `example-with-errors`)",
    )
    local_up.add_argument(
        "--no-services",
        action="store_true",
        help="only the emulated AWS resources (tests and benchmarks run their own services)",
    )
    local_up.add_argument("--max-receives", type=int, help="maxReceiveCount of both queues")
    local_up.add_argument(
        "--visibility-timeout", type=int, help="visibility timeout (s) of both queues"
    )
    local_up.set_defaults(func=_cmd_local_up)
    local_ps = local_sub.add_parser(
        "ps", parents=[state_opt], help="each process of the local stack and the queue depths"
    )
    local_ps.add_argument("--json", action="store_true", help="machine-readable output")
    local_ps.set_defaults(func=_cmd_local_ps)
    local_logs = local_sub.add_parser(
        "logs", parents=[state_opt], help="the services' logs (all, or one SERVICE)"
    )
    local_logs.add_argument(
        "service",
        metavar="SERVICE",
        nargs="?",
        help="moto, simulator, orchestrator, worker (every worker) or worker-N",
    )
    local_logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    local_logs.add_argument(
        "-n", "--lines", type=int, default=50, help="last lines of each log (default 50)"
    )
    local_logs.set_defaults(func=_cmd_local_logs)
    local_down = local_sub.add_parser(
        "down", parents=[state_opt], help="stop everything `up` started"
    )
    local_down.set_defaults(func=_cmd_local_down)

    submit = sub.add_parser("submit", parents=[common], help="request an export")
    submit.add_argument("export_id", metavar="EXPORT_ID")
    submit.add_argument("--tenant", help="tenant id carried on every job")
    submit.add_argument("--prefix", help="destination key prefix (default: exports/)")
    submit.add_argument("--wait", action="store_true", help="follow progress until it ends")
    submit.add_argument(
        "--timeout", type=_positive, help="with --wait: give up after (s; default 900)"
    )
    submit.set_defaults(func=_cmd_submit)

    status = sub.add_parser("status", parents=[common], help="an export's progress")
    status.add_argument("export_id", metavar="EXPORT_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--stall-seconds",
        type=_positive,
        help="idle time after which an unfinished export is stalled "
        "(default: EXPORTPIPE_STALL_SECONDS, else 3600, as the ExportsStalled metric)",
    )
    status.set_defaults(func=_cmd_status)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, redrive")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, parser_class=_Parser)
    queue_opt = _Parser(add_help=False)
    queue_opt.add_argument(
        "--queue", choices=("requests", "jobs"), help="one queue pair (default: both)"
    )
    dlq_list = dlq_sub.add_parser("list", parents=[common, queue_opt], help="list dead letters")
    dlq_list.add_argument("--json", action="store_true")
    dlq_list.set_defaults(func=_cmd_dlq_list)
    dlq_show = dlq_sub.add_parser("show", parents=[common, queue_opt], help="one dead letter")
    dlq_show.add_argument("message_id", metavar="ID", help="message id (or a unique prefix)")
    dlq_show.add_argument("--json", action="store_true")
    dlq_show.set_defaults(func=_cmd_dlq_show)
    dlq_redrive = dlq_sub.add_parser(
        "redrive", parents=[common, queue_opt], help="send dead letters back to their queue"
    )
    dlq_redrive.add_argument("--id", help="only this message id (or a unique prefix)")
    dlq_redrive.set_defaults(func=_cmd_dlq_redrive)

    sub.add_parser("plan", add_help=False, help="capacity and cost planner (see `plan --help`)")

    demo = sub.add_parser("demo", help="run one real export end to end on this machine")
    demo.add_argument("--files", type=int, default=36, help="files in the export (default 36)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    demo.add_argument("--state-dir", type=Path, help="keep state and logs here")
    demo.add_argument("--keep", action="store_true", help="keep the state dir after success")
    demo.add_argument("--timeout", type=_positive, default=150.0, help="give up after (s)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        if args_list[:1] == ["plan"]:
            from exportpipe.tools.planner import main as planner_main

            return planner_main(args_list[1:])
        args = build_parser().parse_args(args_list)
        return int(args.func(args))
    except CliError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (BotoCoreError, ClientError, AwsTransientError) as exc:
        error = translate_aws_error(exc, getattr(args, "stack", None))
        print(f"{PROG}: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
