"""``exportpipe``: the operator CLI.

Commands::

    exportpipe local up|down            the local stack (moto server, queues, bucket, table)
    exportpipe submit EXPORT_ID         request an export (--wait: live progress)
    exportpipe status EXPORT_ID         progress, output location, stalled flag (--json)
    exportpipe dlq list|show|redrive    dead letters with their reasons; redrive after a fix
    exportpipe plan ...                 the capacity and cost planner
    exportpipe demo                     the whole system end to end on this machine

Settings come from ``--env-file``, else ``EXPORTPIPE_ENV_FILE``, else
``.exportpipe/local.env`` if present, else the environment (see
:mod:`exportpipe.tools.envfile`). Expected problems end in one line on stderr and a
non-zero exit status (see :mod:`exportpipe.tools.errors`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
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


def _err() -> Console:
    return Console(stderr=True, highlight=False)


# ------------------------------------------------------------------- commands


def _cmd_local_up(args: argparse.Namespace) -> int:
    from exportpipe.tools.local import StackOptions, up

    result = up(
        args.state_dir,
        StackOptions(max_receives=args.max_receives, visibility_timeout=args.visibility_timeout),
    )
    how = "reused" if result.reused else "started"
    console = _out()
    console.print(
        f"local stack {how}: moto server pid {result.state.pid} on {result.state.endpoint}"
    )
    console.print(f"settings written to {escape(str(result.env_file))}")
    console.print(f"  services: EXPORTPIPE_ENV_FILE={escape(str(result.env_file))}")
    if args.state_dir.resolve() != (Path.cwd() / DEFAULT_STATE_DIR).resolve():
        console.print(f"  CLI:      exportpipe --env-file {escape(str(result.env_file))} ...")
    return EXIT_OK


def _cmd_local_down(args: argparse.Namespace) -> int:
    from exportpipe.tools.local import down

    state = down(args.state_dir)
    if state is None:
        _out().print(f"no local stack running in {escape(str(args.state_dir))}")
    else:
        _out().print(f"local stack stopped (moto server pid {state.pid} on {state.endpoint})")
    return EXIT_OK


def _cmd_submit(args: argparse.Namespace) -> int:
    from exportpipe.tools.status import stall_seconds_of
    from exportpipe.tools.submit import exit_code_for, submit_export, wait_for_export

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
        timeout=args.timeout,
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


def _run_planner(argv: Sequence[str]) -> int:
    try:
        from exportpipe.tools.planner import main as planner_main
    except ImportError as exc:
        raise CliError(f"the capacity planner is not available: {exc}") from None
    return int(planner_main(list(argv)))


# --------------------------------------------------------------------- parser


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``exportpipe``."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help="settings file (default: $EXPORTPIPE_ENV_FILE, then .exportpipe/local.env)",
    )
    parser = _Parser(prog=PROG, description="Operate exportpipe: local stack, exports, DLQs.")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file (default: $EXPORTPIPE_ENV_FILE, then .exportpipe/local.env)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    local = sub.add_parser("local", help="start or stop the local stack")
    local_sub = local.add_subparsers(dest="action", required=True, parser_class=_Parser)
    local_up = local_sub.add_parser("up", help="start (or reuse) the local stack")
    local_up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    local_up.add_argument("--max-receives", type=int, help="maxReceiveCount of both queues")
    local_up.add_argument(
        "--visibility-timeout", type=int, help="visibility timeout (s) of both queues"
    )
    local_up.set_defaults(func=_cmd_local_up)
    local_down = local_sub.add_parser("down", help="stop the local stack that `up` started")
    local_down.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    local_down.set_defaults(func=_cmd_local_down)

    submit = sub.add_parser("submit", parents=[common], help="request an export")
    submit.add_argument("export_id", metavar="EXPORT_ID")
    submit.add_argument("--tenant", help="tenant id carried on every job")
    submit.add_argument("--prefix", help="destination key prefix (default: exports/)")
    submit.add_argument("--wait", action="store_true", help="follow progress until it ends")
    submit.add_argument("--timeout", type=_positive, help="with --wait: give up after (s)")
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
            return _run_planner(args_list[1:])
        args = build_parser().parse_args(args_list)
        if not hasattr(args, "env_file"):
            args.env_file = None
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
