"""The service processes of a run: one orchestrator and N worker slots, killed and restarted.

A *slot* holds one worker process at a time. Killing or stopping it empties the slot;
a replacement starts ``restart_after`` seconds later (as ECS replaces a task). A process
that exits without being signalled is a crash: it is recorded with its log tail and
replaced at once. A SIGTERMed process must exit 0 within :data:`TERM_DEADLINE`
seconds; otherwise it is killed and recorded as an unclean shutdown.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.traps import worker_access_key
from exportpipe.tools.launch import start_orchestrator, start_worker
from exportpipe.tools.processes import ProcessGroup, ServiceProcess

__all__ = ["ORCHESTRATOR", "TERM_DEADLINE", "Exit", "Fleet"]

ORCHESTRATOR = -1
"""The slot number of the orchestrator."""

TERM_DEADLINE = 60.0


@dataclass(frozen=True)
class Exit:
    """How a process ended (signalled by the run, or on its own)."""

    name: str
    code: int
    seconds: float
    log_tail: str = ""


@dataclass
class _Stopping:
    process: ServiceProcess
    since: float


@dataclass
class Fleet:
    """Starts, signals and replaces the service processes.

    Attributes:
        group: every process ever started (stopped together at the end).
        crashes: processes that exited without being signalled.
        unclean: SIGTERMed processes that exited non-zero or too late.
        clean_stops: SIGTERMed processes that exited 0 in time.
        startup_stops: processes SIGTERMed before their consumer started (Python's
            default action ends them; they had received nothing, so nothing is lost).
        restarts: replacement processes started.
    """

    group: ProcessGroup
    worker_env: Mapping[str, str]
    orchestrator_env: Mapping[str, str]
    log_dir: Path
    workers: int
    slots: dict[int, ServiceProcess | None] = field(default_factory=dict)
    crashes: list[Exit] = field(default_factory=list)
    unclean: list[Exit] = field(default_factory=list)
    clean_stops: list[Exit] = field(default_factory=list)
    startup_stops: list[Exit] = field(default_factory=list)
    restarts: int = 0
    _generation: dict[int, int] = field(default_factory=dict)
    _due: dict[int, float] = field(default_factory=dict)
    _stopping: list[_Stopping] = field(default_factory=list)

    def start(self) -> None:
        """Start the orchestrator and every worker slot."""
        for slot in (ORCHESTRATOR, *range(self.workers)):
            self._start(slot)

    def _start(self, slot: int) -> ServiceProcess:
        generation = self._generation.get(slot, 0) + 1
        self._generation[slot] = generation
        if slot == ORCHESTRATOR:
            process = start_orchestrator(
                self.group,
                self.orchestrator_env,
                log_dir=self.log_dir,
                name=f"orchestrator.{generation}",
            )
        else:
            process = start_worker(
                self.group,
                # Its own access key, so the fault proxy knows which slot sent a request.
                {**self.worker_env, "AWS_ACCESS_KEY_ID": worker_access_key(slot)},
                log_dir=self.log_dir,
                name=f"worker-{slot}.{generation}",
            )
        self.slots[slot] = process
        return process

    def alive(self, slot: int) -> ServiceProcess | None:
        """The running process of ``slot``, if any."""
        process = self.slots.get(slot)
        return process if process is not None and process.running() else None

    def running_workers(self) -> int:
        """Worker slots with a running process."""
        return sum(1 for slot in range(self.workers) if self.alive(slot) is not None)

    def signal(self, slot: int, signum: int, *, restart_after: float) -> str | None:
        """Send ``signum`` to the process of ``slot`` (or, if it is empty, the next busy
        worker slot); schedule its replacement. Returns the name signalled, or ``None``."""
        candidates = [slot]
        if slot != ORCHESTRATOR:
            candidates += [(slot + k) % self.workers for k in range(1, self.workers)]
        for target in candidates:
            process = self.alive(target)
            if process is None:
                continue
            if signum == signal.SIGKILL:
                process.kill()
            else:
                process.signal(signum)
                self._stopping.append(_Stopping(process, time.monotonic()))
            self.slots[target] = None
            self._due[target] = time.monotonic() + restart_after
            return process.name
        return None

    def tick(self, *, restart: bool = True) -> None:
        """Replace what is due, notice crashes, collect stopped processes' exit codes."""
        now = time.monotonic()
        for slot, process in list(self.slots.items()):
            if process is None or process.running():
                continue
            code = process.returncode
            self.crashes.append(
                Exit(process.name, code if code is not None else -1, 0.0, process.log_tail(30))
            )
            self.slots[slot] = None
            self._due[slot] = now
        if restart:
            for slot, when in list(self._due.items()):
                if when <= now:
                    del self._due[slot]
                    self._start(slot)
                    self.restarts += 1
        for entry in list(self._stopping):
            code = entry.process.returncode
            waited = now - entry.since
            if code is None and waited < TERM_DEADLINE:
                continue
            self._stopping.remove(entry)
            if code is None:
                code = entry.process.kill()
                self.unclean.append(Exit(entry.process.name, code, waited, "killed: too slow"))
            elif code == -signal.SIGTERM and _never_started(entry.process):
                self.startup_stops.append(Exit(entry.process.name, code, waited))
            elif code != 0:
                self.unclean.append(
                    Exit(entry.process.name, code, waited, entry.process.log_tail(30))
                )
            else:
                self.clean_stops.append(Exit(entry.process.name, code, waited))

    def stop_all(self) -> None:
        """SIGTERM every running process and record how each stopping one ended."""
        started = time.monotonic()
        already = {id(entry.process) for entry in self._stopping}
        for process in self.group.processes:
            if process.running() and id(process) not in already:
                self._stopping.append(_Stopping(process, started))
                process.signal(signal.SIGTERM)
        self.slots.clear()
        self._due.clear()
        while self._stopping:
            self.tick(restart=False)
            time.sleep(0.1)


def _never_started(process: ServiceProcess) -> bool:
    """True if the process never logged that its consumer started."""
    try:
        return "consumer started" not in process.log_file.read_text(errors="replace")
    except OSError:
        return True
