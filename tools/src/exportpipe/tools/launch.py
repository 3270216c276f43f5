"""Starting the system's processes on one machine: simulator, orchestrator, workers.

Used by ``exportpipe demo`` and the end-to-end tests, so both run exactly what
production runs -- each service as its own process (``python -m exportpipe.worker``),
configured only through its environment and ``EXPORTPIPE_ENV_FILE``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exportpipe.tools.envfile import ENV_FILE_VARIABLE
from exportpipe.tools.errors import CliError
from exportpipe.tools.processes import ProcessGroup, ServiceProcess
from exportpipe.tools.simulator import SimulatorConfig

__all__ = [
    "RunningSimulator",
    "service_environment",
    "simulator_command",
    "start_orchestrator",
    "start_simulator",
    "start_worker",
    "wait_for_url",
]

# Settings that make a local run quick to react and quick to stop; the stack's env file
# supplies the queues, bucket, table and topic.
LOCAL_SERVICE_DEFAULTS = {
    "EXPORTPIPE_WAIT_TIME_SECONDS": "1",
    "EXPORTPIPE_PAGE_SIZE": "10",
    "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": "10",
    "EXPORTPIPE_METRICS_FLUSH_SECONDS": "10",
    "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": "127.0.0.1",
    "EXPORTPIPE_PART_SIZE_BYTES": str(5 * 1024 * 1024),
    "EXPORTPIPE_UPLOAD_PARTS_IN_FLIGHT": "2",
}


@dataclass(frozen=True)
class RunningSimulator:
    """The Export API simulator process and how to reach it."""

    process: ServiceProcess
    url: str
    token: str


def simulator_command(
    config: SimulatorConfig, state_dir: Path, name: str
) -> tuple[list[str], Path]:
    """The simulator serving ``config`` on a free port, and the file it writes its URL to.

    ``config`` is written to ``<state_dir>/<name>.json``; the URL file is removed first, so
    :func:`wait_for_url` never reads a previous run's.
    """
    spec_file = state_dir / f"{name}.json"
    spec_file.write_text(config.model_dump_json(indent=1) + "\n")
    url_file = state_dir / f"{name}.url"
    url_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "exportpipe.tools.simulator", "--port", "0"]
    return [*argv, "--exports", str(spec_file), "--url-file", str(url_file)], url_file


def wait_for_url(
    url_file: Path, running: Callable[[], bool], timeout: float
) -> dict[str, Any] | None:
    """The simulator's ``{"url", "token"}`` once written; ``None`` if it exited or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = url_file.read_text().strip() if url_file.is_file() else ""
        if text.endswith("}"):
            return dict(json.loads(text))
        if not running():
            return None
        time.sleep(0.05)
    return None


def start_simulator(
    group: ProcessGroup,
    config: SimulatorConfig,
    *,
    state_dir: Path,
    name: str = "simulator",
    timeout: float = 30.0,
) -> RunningSimulator:
    """Start ``python -m exportpipe.tools.simulator`` serving ``config``; wait until it listens.

    Raises:
        CliError: it exited or did not report its URL within ``timeout``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    argv, url_file = simulator_command(config, state_dir, name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = group.start(name, argv, env=env, log_file=state_dir / "logs" / f"{name}.log")
    info = wait_for_url(url_file, process.running, timeout)
    if info is None:
        process.stop(grace=2)
        raise CliError(f"the simulator did not start (log: {process.log_file})")
    return RunningSimulator(process=process, url=info["url"], token=info["token"])


def service_environment(
    stack_values: Mapping[str, str],
    env_file: Path,
    *,
    api_url: str,
    api_token: str,
    spool_dir: Path,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a local service process.

    The caller's own ``AWS_*`` and ``EXPORTPIPE_*`` variables are dropped, so a process
    only ever talks to the stack described by ``stack_values`` / ``env_file``.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EXPORTPIPE_"))}
    spool_dir.mkdir(parents=True, exist_ok=True)
    return {
        **base,
        **stack_values,
        ENV_FILE_VARIABLE: str(env_file),
        "PYTHONUNBUFFERED": "1",
        **LOCAL_SERVICE_DEFAULTS,
        "EXPORTPIPE_EXPORT_API_URL": api_url,
        "EXPORTPIPE_EXPORT_API_TOKEN": api_token,
        "EXPORTPIPE_SPOOL_DIR": str(spool_dir),
        **(overrides or {}),
    }


def _start_service(
    group: ProcessGroup, module: str, env: Mapping[str, str], *, log_dir: Path, name: str
) -> ServiceProcess:
    return group.start(
        name, [sys.executable, "-m", module], env=env, log_file=log_dir / f"{name}.log"
    )


def start_orchestrator(
    group: ProcessGroup, env: Mapping[str, str], *, log_dir: Path, name: str = "orchestrator"
) -> ServiceProcess:
    """Start one orchestrator process (``python -m exportpipe.orchestrator``)."""
    return _start_service(group, "exportpipe.orchestrator", env, log_dir=log_dir, name=name)


def start_worker(
    group: ProcessGroup, env: Mapping[str, str], *, log_dir: Path, name: str = "worker"
) -> ServiceProcess:
    """Start one worker process (``python -m exportpipe.worker``)."""
    return _start_service(group, "exportpipe.worker", env, log_dir=log_dir, name=name)
