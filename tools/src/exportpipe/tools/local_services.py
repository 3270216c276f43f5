"""The services of the local system: Export API simulator, orchestrator and workers.

``exportpipe local up`` starts them next to the moto server of
:mod:`exportpipe.tools.local`, each as its own detached process configured only through
its environment and ``EXPORTPIPE_ENV_FILE`` (docs/operations.md, *The local stack*).
``services.json`` records each one's pid, start time, log file and a digest of its
configuration: a second ``up`` keeps what runs as asked, and ``down`` signals only a
process whose pid *and* start time match the record, never a reused pid.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from exportpipe.tools.errors import CliError
from exportpipe.tools.launch import service_environment, simulator_command, wait_for_url
from exportpipe.tools.processes import (
    process_alive,
    process_started_at,
    spawn_detached,
    stop_pids,
)
from exportpipe.tools.simulator import ExportSpec, FileSpec, SimulatorConfig

__all__ = [
    "DEFAULT_WORKERS",
    "LOCAL_API_TOKEN",
    "SERVICES_FILE_NAME",
    "ServiceRecord",
    "ServicesResult",
    "default_exports",
    "follow",
    "load_exports",
    "log_files",
    "read_services",
    "start_services",
    "stop_services",
]

SERVICES_FILE_NAME = "services.json"
DEFAULT_WORKERS = 2
LOCAL_API_TOKEN = "local-token"  # noqa: S105 - the local simulator's token, not a secret
_SIMULATOR = "simulator"
_ORCHESTRATOR = "orchestrator"
_IDENTITY_TOLERANCE = 0.05  # seconds: the start time is read from clock ticks


def default_exports() -> SimulatorConfig:
    """What the local simulator serves unless ``--exports`` says otherwise.

    * ``example``: 12 files of every kind (gzip and zstd JSONL, zip of CSVs, tar and
      tar.gz archives, plain JSONL, CSV and binary), 5 per page; completes cleanly.
    * ``example-with-errors``: 8 such files plus ``corrupt-download``, whose served bytes
      do not match its listed sha256: it completes as ``completed_with_errors`` and
      leaves one dead letter (reason ``sha256_mismatch``) on the jobs DLQ.
    """
    return SimulatorConfig(
        token=LOCAL_API_TOKEN,
        exports=(
            ExportSpec(export_id="example", seed=1, generated=12, file_size=64 * 1024, page_size=5),
            ExportSpec(
                export_id="example-with-errors",
                seed=2,
                generated=8,
                file_size=64 * 1024,
                page_size=5,
                files=(
                    FileSpec(
                        file_id="corrupt-download",
                        name="corrupt-download.bin",
                        kind="bin",
                        size_bytes=64 * 1024,
                        seed=11,
                        corrupt="flip_byte",
                    ),
                ),
            ),
        ),
    )


def load_exports(path: Path | None) -> SimulatorConfig:
    """The simulator configuration: ``path`` (see ``docs/simulator.md``) or the default.

    A file without a token gets :data:`LOCAL_API_TOKEN`.

    Raises:
        CliError: the file cannot be read or is not a valid spec.
    """
    if path is None:
        return default_exports()
    from exportpipe.tools.simulator.__main__ import load_config

    try:
        config = load_config(path)
    except OSError as exc:
        raise CliError(f"--exports {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise CliError(
            f"--exports {path}: {where}: {first['msg']} (see docs/simulator.md)"
        ) from None
    except ValueError as exc:
        raise CliError(f"--exports {path}: not JSON: {exc}") from None
    if config.token is None:
        config = config.model_copy(update={"token": LOCAL_API_TOKEN})
    return config


@dataclass(frozen=True, kw_only=True)
class ServiceRecord:
    """One service process ``up`` started, as recorded in ``services.json``.

    Attributes:
        name: ``simulator``, ``orchestrator`` or ``worker-N``.
        pid: its process id.
        started: its start time as the system reports it (with ``pid``, its identity).
        log_file: where its stdout and stderr go.
        config: a digest of the command and settings it was started with.
        url: the simulator's base URL (``None`` for the other services).
    """

    name: str
    pid: int
    started: float
    log_file: str
    config: str
    url: str | None = None

    def is_running(self) -> bool:
        """True while the recorded process runs (same pid, same start time)."""
        if not process_alive(self.pid):
            return False
        started = process_started_at(self.pid)
        return started is not None and abs(started - self.started) < _IDENTITY_TOLERANCE


@dataclass(frozen=True)
class ServicesResult:
    """What :func:`start_services` did.

    Attributes:
        records: every service now recorded, in start order.
        started: names of the services it started.
        kept: names of the services that were already running as asked.
        stopped: names of the services it stopped (extra workers, changed settings).
    """

    records: list[ServiceRecord]
    started: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


def read_services(state_dir: Path) -> list[ServiceRecord]:
    """The recorded services of the stack in ``state_dir`` (empty if none)."""
    try:
        raw = json.loads((state_dir / SERVICES_FILE_NAME).read_text())
        return [ServiceRecord(**item) for item in raw]
    except (OSError, ValueError, TypeError):
        return []


def _write_services(state_dir: Path, records: Sequence[ServiceRecord]) -> None:
    path = state_dir / SERVICES_FILE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
    tmp.replace(path)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _spawn(
    name: str, argv: list[str], *, env: Mapping[str, str], state_dir: Path, config: str
) -> ServiceRecord:
    log_file = state_dir / "logs" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        pid = spawn_detached(argv, log_file=log_file, env=env, cwd=state_dir)
    except RuntimeError as exc:
        raise CliError(f"cannot start {name}: {exc}") from None
    return ServiceRecord(
        name=name,
        pid=pid,
        started=process_started_at(pid) or 0.0,
        log_file=str(log_file),
        config=config,
    )


def _start_simulator(
    state_dir: Path, config: SimulatorConfig, digest: str, timeout: float
) -> ServiceRecord:
    argv, url_file = simulator_command(config, state_dir, _SIMULATOR)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    record = _spawn(_SIMULATOR, argv, env=env, state_dir=state_dir, config=digest)
    info = wait_for_url(url_file, lambda: process_alive(record.pid), timeout)
    if info is None:
        stop_pids([record.pid], grace=2)
        raise CliError(f"the simulator did not start (log: {record.log_file})")
    return ServiceRecord(**{**asdict(record), "url": info["url"]})


def start_services(
    state_dir: Path,
    stack_values: Mapping[str, str],
    env_file: Path,
    *,
    workers: int = DEFAULT_WORKERS,
    exports: SimulatorConfig | None = None,
    timeout: float = 30.0,
) -> ServicesResult:
    """Start (or keep) the simulator, one orchestrator and ``workers`` workers.

    Args:
        state_dir: the stack's state directory (``services.json``, ``logs/``).
        stack_values: the stack's settings (what ``local up`` wrote to ``env_file``).
        env_file: the stack's env file, passed to the services as ``EXPORTPIPE_ENV_FILE``.
        workers: how many worker processes.
        exports: what the simulator serves (default :func:`default_exports`).
        timeout: how long the simulator may take to listen.

    Raises:
        CliError: a service could not be started, or ``workers`` is out of range.
    """
    if not 0 <= workers <= 16:
        raise CliError("--workers must be between 0 and 16")
    config = exports or default_exports()
    state_dir = state_dir.resolve()
    recorded = {r.name: r for r in read_services(state_dir) if r.is_running()}
    result = ServicesResult(records=[])

    def keep_or_start(name: str, digest: str, start: Callable[[], ServiceRecord]) -> ServiceRecord:
        old = recorded.pop(name, None)
        if old is not None and old.config == digest:
            result.kept.append(name)
            record = old
        else:
            if old is not None:  # started with other settings: restart it
                stop_pids([old.pid])
                result.stopped.append(name)
            record = start()
            result.started.append(name)
        result.records.append(record)
        # Record as we go: a failure further on still leaves everything stoppable.
        _write_services(state_dir, [*result.records, *recorded.values()])
        return record

    sim_digest = _digest(_SIMULATOR, config.model_dump(mode="json"))
    simulator = keep_or_start(
        _SIMULATOR, sim_digest, lambda: _start_simulator(state_dir, config, sim_digest, timeout)
    )
    env = service_environment(
        stack_values,
        env_file,
        api_url=simulator.url or "",
        api_token=config.token or LOCAL_API_TOKEN,
        spool_dir=state_dir / "spool",
    )
    # The digest covers what the service sees of the stack, not the caller's PATH etc.
    settings = {k: v for k, v in env.items() if k.startswith(("AWS_", "EXPORTPIPE_"))}
    names = [(_ORCHESTRATOR, "exportpipe.orchestrator")]
    names += [(f"worker-{n}", "exportpipe.worker") for n in range(1, workers + 1)]
    for name, module in names:
        argv = [sys.executable, "-m", module]
        digest = _digest(argv, settings)
        start = partial(_spawn, name, argv, env=env, state_dir=state_dir, config=digest)
        keep_or_start(name, digest, start)
    extra = list(recorded.values())  # workers beyond --workers
    stop_pids([r.pid for r in extra])
    result.stopped.extend(r.name for r in extra)
    _write_services(state_dir, result.records)
    return result


def stop_services(state_dir: Path, *, grace: float = 15.0) -> list[ServiceRecord]:
    """Stop every recorded service still running (SIGTERM, then SIGKILL after ``grace``).

    The services first, then the simulator they talk to. Returns the records of the
    processes that were stopped, and removes ``services.json``.
    """
    state_dir = state_dir.resolve()
    running = [r for r in read_services(state_dir) if r.is_running()]
    services = [r for r in running if r.name != _SIMULATOR]
    simulators = [r for r in running if r.name == _SIMULATOR]
    stop_pids([r.pid for r in services], grace=grace)
    stop_pids([r.pid for r in simulators], grace=grace)
    (state_dir / SERVICES_FILE_NAME).unlink(missing_ok=True)
    return [*services, *simulators]


def log_files(state_dir: Path, service: str | None = None) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of the stack's logs: ``moto`` and every service's.

    ``service`` selects one (``worker`` selects every worker).

    Raises:
        CliError: no log matches ``service``.
    """
    state_dir = state_dir.resolve()
    found = [("moto", state_dir / "moto.log")] if (state_dir / "moto.log").is_file() else []
    logs = state_dir / "logs"
    if logs.is_dir():
        order = {_SIMULATOR: 0, _ORCHESTRATOR: 1}
        paths = sorted(
            logs.glob("*.log"),
            key=lambda p: (order.get(p.stem, 2), len(p.stem), p.stem),
        )
        found += [(p.stem, p) for p in paths]
    if service is not None:
        found = [
            (name, path)
            for name, path in found
            if name == service or (service == "worker" and name.startswith("worker-"))
        ]
        if not found:
            raise CliError(
                f"no log for {service!r} in {state_dir} "
                "(services: moto, simulator, orchestrator, worker, worker-N)"
            )
    yield from found


def follow(
    files: Sequence[tuple[str, Path]],
    emit: Callable[[str, str], None],
    *,
    poll_seconds: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Call ``emit(name, line)`` for every whole line appended to ``files`` from now on.

    Runs until ``stop()`` is true (the CLI: until Ctrl-C). A file that is truncated or
    replaced is read again from its start.
    """
    offsets: dict[Path, int] = {}
    partial: dict[Path, bytes] = {}
    for _, path in files:
        try:
            offsets[path] = path.stat().st_size
        except OSError:
            offsets[path] = 0
    while not stop():
        for name, path in files:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if size < offsets[path]:
                offsets[path], partial[path] = 0, b""
            if size == offsets[path]:
                continue
            with open(path, "rb") as f:
                f.seek(offsets[path])
                chunk = partial.pop(path, b"") + f.read(size - offsets[path])
            offsets[path] = size
            *whole, rest = chunk.split(b"\n")
            if rest:
                partial[path] = rest
            for line in whole:
                emit(name, line.decode(errors="replace"))
        time.sleep(poll_seconds)
