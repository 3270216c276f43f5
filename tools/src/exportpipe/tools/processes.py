"""Child processes of the local system: detached servers and supervised services.

Two kinds:

* :func:`spawn_detached` starts a process that outlives the command that started it
  (``exportpipe local up`` returns while the moto server keeps running). It goes through
  a short-lived intermediate process so the server is re-parented to init at once: no
  zombie is left for the caller to reap, and no ``Popen`` object of a still-running
  process is ever garbage-collected.
* :class:`ServiceProcess` / :class:`ProcessGroup` supervise processes that live only as
  long as their owner (the demo, an end-to-end test): logs to a file, SIGTERM with a
  grace period, SIGKILL after it, always reaped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

__all__ = [
    "ProcessGroup",
    "ServiceProcess",
    "process_alive",
    "process_command",
    "process_started_at",
    "spawn_detached",
    "stop_pids",
    "tail",
]

_LAUNCHER = (
    "import json, os, subprocess, sys\n"
    "spec = json.loads(sys.argv[1])\n"
    "log = open(spec['log'], 'ab')\n"
    "proc = subprocess.Popen(spec['argv'], stdin=subprocess.DEVNULL, stdout=log,\n"
    "                        stderr=subprocess.STDOUT, start_new_session=True,\n"
    "                        cwd=spec['cwd'])\n"
    "print(proc.pid, flush=True)\n"
    "os._exit(0)\n"
)


def spawn_detached(
    argv: Sequence[str], *, log_file: Path, env: Mapping[str, str], cwd: Path | None = None
) -> int:
    """Start ``argv`` in its own session, detached from this process; return its pid.

    Its stdout and stderr are appended to ``log_file``; stdin is ``/dev/null``.
    """
    spec = {"argv": list(argv), "log": str(log_file), "cwd": str(cwd or Path.cwd())}
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, json.dumps(spec)],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if launcher.returncode != 0 or not launcher.stdout.strip().isdigit():
        detail = (launcher.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"could not start {argv[0]}: {detail}")
    return int(launcher.stdout.strip())


def process_command(pid: int) -> str | None:
    """The command line of process ``pid``, or ``None`` if it cannot be read."""
    try:
        return " ".join(psutil.Process(pid).cmdline()) or None
    except psutil.Error:
        return None


def process_started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or ``None`` if it does not exist.

    With the pid it identifies one process for good: a pid reused by a later process
    has a later start time.
    """
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def stop_pids(pids: Sequence[int], *, grace: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``grace`` seconds (one period for all), then SIGKILL.

    Returns:
        The pids that were running.
    """
    running = [pid for pid in pids if process_alive(pid)]
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in running:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(process_alive(pid) for pid in running):
            time.sleep(0.05)
    return running


def tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` (reads at most the last 1 MiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 2**20))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []


class ServiceProcess:
    """One supervised child process with its output in ``log_file``.

    Args:
        name: a short label (``worker-1``) used in messages.
        argv: the command.
        env: its complete environment.
        log_file: where stdout and stderr go (appended).
    """

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_file: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # a Ctrl-C in the terminal is ours to relay
            )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while running."""
        return self.proc.poll()

    def running(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` (ignored once the process has exited)."""
        if self.running():
            self.proc.send_signal(signum)

    def kill(self) -> int:
        """SIGKILL and reap; returns the exit status."""
        self.signal(signal.SIGKILL)
        return self.proc.wait()

    def stop(self, grace: float = 20.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit status."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return self.kill()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit; returns the exit status."""
        return self.proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(tail(self.log_file, lines))


class ProcessGroup:
    """Processes stopped together (reverse start order) when the group exits."""

    def __init__(self, *, grace: float = 20.0) -> None:
        self.grace = grace
        self.processes: list[ServiceProcess] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], log_file: Path
    ) -> ServiceProcess:
        """Start and supervise a process."""
        self.processes.append(ServiceProcess(name, argv, env=env, log_file=log_file))
        return self.processes[-1]

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every running process at once, then wait for each; name -> exit status."""
        for process in reversed(self.processes):
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        codes: dict[str, int] = {}
        for process in reversed(self.processes):
            try:
                codes[process.name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[process.name] = process.kill()
        return codes

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
