"""One fault run: stack, simulator, proxy, services, the schedule played, then the ledger.

Layout of a run (everything on 127.0.0.1)::

    simulator (Export API) <──── orchestrator, workers ────> FaultProxy ──> moto server
          ^ scripted faults            ^ signals                ^ AWS fault windows
          └──────────── this process: plays the schedule, injects messages ──┘ (direct)

The run's own calls (submitting, injecting messages, watching, reconciling) go straight
to the moto server, so what it observes is never distorted by the faults it injects.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.faults.aws import FAULTS, AwsFaults
from bench.faults.export import PAGE_SIZE, ExportPlan, build_export
from bench.faults.fleet import ORCHESTRATOR, Fleet
from bench.faults.ledger import Ledger, Observed, reconcile
from bench.faults.messages import Injected, MessageFactory, fetch_listing
from bench.faults.schedule import Event, build_schedule, format_schedule
from bench.faults.traps import TRAPS, KillTraps
from exportpipe.common.schemas import encode
from exportpipe.common.sqs import queue_depth
from exportpipe.testing import FaultProxy
from exportpipe.tools.context import Stack
from exportpipe.tools.launch import service_environment, start_simulator
from exportpipe.tools.local import StackOptions, down, up
from exportpipe.tools.processes import ProcessGroup
from exportpipe.tools.simulator import Fault, SimulatorConfig
from exportpipe.tools.submit import submit_export

__all__ = ["Options", "describe_plan", "plan_run", "run"]

TOKEN = "faults-token"  # noqa: S105 - the local simulator's token
VISIBILITY_TIMEOUT = 10
"""Short, so a killed process's messages come back within seconds (as in the e2e tests)."""
_MAX_DEFER = 15.0


@dataclass(frozen=True, kw_only=True)
class Options:
    """What to run.

    Attributes:
        seed: seeds the export and the schedule.
        files: files in the export.
        workers: worker processes (slots).
        concurrency: jobs per worker process.
        duration: seconds over which faults are scheduled.
        kinds: fault kinds to schedule (default: all).
        timeout: give up waiting for the export after this many seconds.
        drain_timeout: after the export finished, wait this long for the queues to empty.
        state_dir: keep state and logs here (default: a temporary directory, removed
            after a run whose must-be-zero figures all are zero, unless ``keep``).
        keep: keep the state directory.
    """

    seed: int = 1
    files: int = 300
    workers: int = 3
    concurrency: int = 3
    duration: float = 100.0
    kinds: list[str] | None = None
    timeout: float = 600.0
    drain_timeout: float = 90.0
    state_dir: Path | None = None
    keep: bool = False


@dataclass
class _Played:
    """What the schedule actually did."""

    injected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    messages: list[Injected] = field(default_factory=list)
    duplicates_sent: int = 0


def plan_run(options: Options) -> tuple[ExportPlan, list[Event]]:
    """The export and the schedule of a run (deterministic in the options)."""
    plan = build_export(options.seed, options.files)
    ids = [plan.spec.file(i).file_id for i in range(plan.count)]
    events = build_schedule(
        options.seed,
        duration=options.duration,
        listing_seconds=plan.listing_seconds,
        workers=options.workers,
        large=list(plan.large),
        files=ids,
        kinds=options.kinds,
    )
    return plan, events


def describe_plan(options: Options, plan: ExportPlan, events: list[Event]) -> str:
    """The header a run prints: the export, then the schedule."""
    kinds = Counter(plan.spec.file(i).kind for i in range(plan.count))
    corrupt = ", ".join(
        f"{f.file_id}={f.corrupt}/{f.kind}"
        for f in (plan.spec.find(i) for i in plan.corrupt)
        if f is not None
    )
    lines = [
        f"seed {options.seed}: export {plan.spec.export_id}, {plan.count} files "
        f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
        f"  large: {', '.join(plan.large)}",
        f"  corrupt: {corrupt}",
        f"  {options.workers} workers x {options.concurrency} jobs, 1 orchestrator; "
        f"faults over {options.duration:g} s",
        f"schedule ({len(events)} events):",
        format_schedule(events),
    ]
    return "\n".join(lines)


class _Simulator:
    """The simulator's control routes."""

    def __init__(self, url: str, export_id: str) -> None:
        self.url, self.export_id = url, export_id

    def _call(self, path: str, payload: Any | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST" if data is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def inject(self, **fault: Any) -> None:
        spec = Fault.model_validate({"export_id": self.export_id, **fault})
        self._call("/_sim/faults", spec.model_dump(mode="json"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("/_sim/requests")["requests"])


class _Player:
    """Plays schedule events against the running system."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        sim: _Simulator,
        aws: AwsFaults,
        traps: KillTraps,
        sqs: Any,
        queues: dict[str, str],
        factory: MessageFactory,
        sizes: dict[str, int],
    ) -> None:
        self.fleet, self.sim, self.aws, self.traps = fleet, sim, aws, traps
        self.sqs, self.queues, self.factory, self.sizes = sqs, queues, factory, sizes
        self.played = _Played()

    def _send(self, queue: str, bodies: list[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        response = self.sqs.send_message_batch(QueueUrl=self.queues[queue], Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"could not inject messages: {response['Failed']}")

    def _hostile(self, message: Injected) -> None:
        self._send(message.queue, [message.body])
        self.played.messages.append(message)

    def spring(self) -> list[str]:
        """Kill the senders caught by traps since the last call; what was done."""
        done = []
        for caught in self.traps.sprung():
            process = self.fleet.alive(caught.slot)
            if process is None:  # already gone: this catch killed nobody
                self.played.skipped[caught.kind] += 1
                continue
            self.fleet.signal(
                caught.slot,
                signal.SIGKILL,
                restart_after=float(caught.params.get("restart_after", 1.0)),
            )
            self.played.injected[caught.kind] += 1
            done.append(f"{caught.describe()} ({process.name})")
        return done

    def play(self, event: Event) -> str | None:
        """Inject ``event``; returns what was done, or ``None`` when it could not apply."""
        kind, p = event.kind, event.params
        if kind in ("worker_kill", "worker_term", "orchestrator_kill", "orchestrator_term"):
            slot = ORCHESTRATOR if kind.startswith("orchestrator") else int(p["slot"])
            signum = signal.SIGKILL if kind.endswith("kill") else signal.SIGTERM
            name = self.fleet.signal(slot, signum, restart_after=float(p["restart_after"]))
            return None if name is None else f"{signal.Signals(signum).name} {name}"
        if kind == "api_429":
            self.sim.inject(
                route=p["route"], status=429, retry_after=p["retry_after"], times=p["times"]
            )
        elif kind == "api_5xx":
            self.sim.inject(route=p["route"], status=p["status"], times=p["times"])
        elif kind == "slow_pages":
            self.sim.inject(route="listing", delay_seconds=p["delay"], times=p["times"])
        elif kind == "download_drop":
            cut = max(1, int(self.sizes[p["file_id"]] * float(p["at"])))
            self.sim.inject(route="download", file_id=p["file_id"], truncate_at=cut)
        elif kind == "truncated_bodies":
            self.sim.inject(route="download", truncate_at=-1, times=p["times"])
        elif kind == "duplicate_jobs":
            for file_id in p["file_ids"]:
                body = encode(self.factory.job(file_id))
                self._send("jobs", [body, body])
                self.played.duplicates_sent += 2
        elif kind == "garbage_requests":
            for variant in p["variants"]:
                self._hostile(self.factory.garbage_request(variant))
        elif kind == "garbage_jobs":
            for variant in p["variants"]:
                self._hostile(self.factory.garbage_job(variant))
        elif kind == "wrong_version_requests":
            self._hostile(self.factory.wrong_version("requests", int(p["version"])))
        elif kind == "wrong_version_jobs":
            self._hostile(self.factory.wrong_version("jobs", int(p["version"])))
        elif kind in FAULTS:
            self.aws.open(kind, seconds=float(p["seconds"]), probability=float(p["probability"]))
        elif kind in TRAPS:
            # Counted as injected when it springs (spring), not now.
            self.traps.arm(kind, p)
            return f"armed {event.describe()}"
        else:
            raise ValueError(f"unknown event kind {kind!r}")
        return event.describe()


def _queue_counts(sqs: Any, url: str) -> dict[str, int]:
    depth = queue_depth(sqs, url)
    return {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed}


def _progress(t: float, stack: Stack, export_id: str, sqs: Any, queues: dict[str, str]) -> str:
    state = stack.tracker().get(export_id)
    jobs = _queue_counts(sqs, queues["jobs"])
    if state is None:
        where = "not started"
    else:
        where = (
            f"{state.status}, pages {state.pages_listed}, done {state.files_done} + "
            f"rejected {state.files_rejected} of {state.files_expected}"
        )
    return f"  [{t:6.1f}s] {where}; SQS 2 visible {jobs['visible']} in flight {jobs['in_flight']}"


def run(options: Options, *, out: Any = print) -> Ledger:
    """Run the whole thing; returns the ledger (its ``failures`` decide the exit status)."""
    started = time.monotonic()
    plan, events = plan_run(options)
    out(describe_plan(options, plan, events))
    temporary = options.state_dir is None
    state_dir = (options.state_dir or Path(tempfile.mkdtemp(prefix="exportpipe-faults-"))).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    out(f"state and logs: {state_dir}")
    ledger: Ledger | None = None
    try:
        ledger = _run(
            options, plan=plan, events=events, state_dir=state_dir, started=started, out=out
        )
        return ledger
    finally:
        down(state_dir / "stack")
        if ledger is not None and not ledger.failures and temporary and not options.keep:
            shutil.rmtree(state_dir, ignore_errors=True)


def _run(
    options: Options,
    *,
    plan: ExportPlan,
    events: list[Event],
    state_dir: Path,
    started: float,
    out: Any,
) -> Ledger:
    export_id = plan.spec.export_id
    stack_up = up(state_dir / "stack", StackOptions(visibility_timeout=VISIBILITY_TIMEOUT))
    stack = Stack.load(stack_up.env_file)
    sqs = stack.client("sqs")
    queues = {"requests": stack.queue_urls("requests")[0], "jobs": stack.queue_urls("jobs")[0]}
    endpoint = stack_up.values["AWS_ENDPOINT_URL"]
    aws = AwsFaults(options.seed)
    traps = KillTraps()
    proxy = FaultProxy(upstream=endpoint, rules=[traps, aws], seed=options.seed).start()
    played: _Played | None = None
    try:
        with ProcessGroup(grace=10) as sim_group, ProcessGroup(grace=30) as services:
            sim_proc = start_simulator(
                sim_group, SimulatorConfig(token=TOKEN, exports=(plan.spec,)), state_dir=state_dir
            )
            sim = _Simulator(sim_proc.url, export_id)
            listing = fetch_listing(sim_proc.url, TOKEN, export_id)
            factory = MessageFactory(
                export_id,
                bucket=stack.bucket,
                output_prefix=stack.output_prefix,
                listing=listing,
            )

            def environment(**overrides: str) -> dict[str, str]:
                return service_environment(
                    stack_up.values,
                    stack_up.env_file,
                    api_url=sim_proc.url,
                    api_token=sim_proc.token,
                    spool_dir=state_dir / "spool",
                    # The services reach AWS only through the fault proxy.
                    overrides={"AWS_ENDPOINT_URL": proxy.endpoint, **overrides},
                )

            fleet = Fleet(
                group=services,
                worker_env=environment(EXPORTPIPE_CONCURRENCY=str(options.concurrency)),
                orchestrator_env=environment(EXPORTPIPE_PAGE_SIZE=str(PAGE_SIZE)),
                log_dir=state_dir / "logs",
                workers=options.workers,
            )
            fleet.start()
            player = _Player(
                fleet=fleet,
                sim=sim,
                aws=aws,
                traps=traps,
                sqs=sqs,
                queues=queues,
                factory=factory,
                sizes={e["file_id"]: int(e.get("size_bytes") or 0) for e in listing},
            )
            played = player.played
            submit_export(stack, export_id)
            t0 = time.monotonic()
            out(f"submitted {export_id} at {t0 - started:.1f} s; playing the schedule")
            finished_at = _play(
                options,
                plan=plan,
                events=events,
                player=player,
                stack=stack,
                sqs=sqs,
                queues=queues,
                t0=t0,
                out=out,
            )
            aws.close_all()
            drained = _drain(sqs, queues, fleet, options.drain_timeout)
            out(
                f"export finished at {finished_at:.1f} s"
                if finished_at is not None
                else "export did not finish"
            )
            out(
                "queues drained"
                if drained
                else f"queues not drained in {options.drain_timeout:g} s"
            )
            fleet.stop_all()
            observed = Observed(
                started=started,
                export_seconds=finished_at,
                scheduled=Counter(e.kind for e in events),
                injected=played.injected,
                skipped=played.skipped,
                hostile=played.messages,
                duplicates_sent=played.duplicates_sent,
                aws_hits=Counter(aws.hits),
                simulator_requests=sim.requests(),
                fleet=fleet,
                log_dir=state_dir / "logs",
                secrets=(TOKEN, "sig="),
                state_dir=state_dir,
            )
            return reconcile(stack, plan, observed, options=options)
    finally:
        proxy.stop()


def _play(
    options: Options,
    *,
    plan: ExportPlan,
    events: list[Event],
    player: _Player,
    stack: Stack,
    sqs: Any,
    queues: dict[str, str],
    t0: float,
    out: Any,
) -> float | None:
    """Play the schedule until the export finishes; returns when it did (or ``None``)."""
    pending = list(events)
    deferred: list[Event] = []
    next_check = next_report = 0.0
    tracker = stack.tracker()
    export_id = plan.spec.export_id
    while True:
        now = time.monotonic() - t0
        while pending and pending[0].at <= now:
            event = pending.pop(0)
            done = player.play(event)
            if done is not None:
                if event.kind not in TRAPS:
                    player.played.injected[event.kind] += 1
                late = now - event.at
                out(f"  [{now:6.1f}s] {done}" + (f" ({late:.1f} s late)" if late > 1 else ""))
            elif now - event.at < _MAX_DEFER:
                # Its process is down (being replaced): act once the replacement runs.
                deferred.append(event)
            else:
                player.played.skipped[event.kind] += 1
                out(f"  [{now:6.1f}s] skipped {event.describe()} (no process to signal)")
        pending = sorted(pending + deferred)
        deferred.clear()
        for done in player.spring():
            out(f"  [{now:6.1f}s] {done}")
        player.fleet.tick()
        if now >= next_check:
            next_check = now + 1.0
            state = tracker.get(export_id)
            if state is not None and state.finished:
                for kind in [e.kind for e in pending] + player.traps.armed():
                    player.played.skipped[kind] += 1
                player.traps.disarm()
                if pending:
                    out(f"  [{now:6.1f}s] export finished; {len(pending)} events not reached")
                return now
        if now >= next_report:
            next_report = now + 10.0
            out(_progress(now, stack, export_id, sqs, queues))
        if now > options.timeout:
            for kind in [e.kind for e in pending] + player.traps.armed():
                player.played.skipped[kind] += 1
            player.traps.disarm()
            return None
        time.sleep(0.05)


def _drain(sqs: Any, queues: dict[str, str], fleet: Fleet, timeout: float) -> bool:
    """Wait until both queues hold nothing (visible, in flight or delayed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.tick()
        if all(sum(_queue_counts(sqs, url).values()) == 0 for url in queues.values()):
            return True
        time.sleep(0.5)
    return False
