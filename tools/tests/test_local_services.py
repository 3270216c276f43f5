"""``exportpipe local up|ps|logs|down``: the whole local system as detached processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exportpipe.tools import cli
from exportpipe.tools.errors import CliError
from exportpipe.tools.local import down, read_state
from exportpipe.tools.local_services import (
    ServiceRecord,
    default_exports,
    follow,
    load_exports,
    read_services,
)
from exportpipe.tools.processes import process_alive, process_started_at

_CLI = "import sys; from exportpipe.tools.cli import main; sys.exit(main())"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory as cwd; whatever a test started is stopped afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    yield tmp_path
    down(tmp_path / ".exportpipe")


def _pids(state_dir: Path) -> list[int]:
    state = read_state(state_dir)
    return [r.pid for r in read_services(state_dir)] + ([state.pid] if state else [])


@pytest.mark.e2e
def test_up_runs_the_system_and_stays_idempotent_after_an_aborted_upload(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = project / ".exportpipe"
    assert cli.main(["local", "up", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "local stack started" in out
    for name in ("simulator", "orchestrator", "worker-1"):
        assert f"{name}" in out
    assert "worker-2" not in out
    first = _pids(state_dir)
    assert len(first) == 4
    # The corrupt file is streamed into a multipart upload, then rejected: aborted.
    assert cli.main(["submit", "example-with-errors", "--wait", "--timeout", "120"]) == 3
    assert "completed_with_errors: 8 done, 1 rejected of 9" in capsys.readouterr().out

    assert cli.main(["local", "up", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "local stack running" in out, out
    assert "started" not in out
    assert _pids(state_dir) == first  # the same server, the same services
    assert cli.main(["status", "example-with-errors", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed_with_errors"

    assert cli.main(["local", "ps", "--json"]) == 0
    ps = json.loads(capsys.readouterr().out)
    assert [(p["service"], p["running"]) for p in ps["processes"]] == [
        ("moto", True),
        ("simulator", True),
        ("orchestrator", True),
        ("worker-1", True),
    ]
    assert ps["queues"]["jobs-dlq"]["visible"] == 1  # the corrupt file's dead letter
    assert ps["queues"]["jobs"] == {"visible": 0, "in_flight": 0}

    assert cli.main(["local", "logs", "worker", "-n", "5"]) == 0
    logged = capsys.readouterr().out.splitlines()
    assert 0 < len(logged) <= 5
    assert all(not line.startswith("worker-1 |") for line in logged)  # one log: no prefix

    # More workers: the running services are kept, one is added.
    assert cli.main(["local", "up", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "worker-2      started" in out
    assert "worker-1      running" in out

    assert cli.main(["local", "down"]) == 0
    out = capsys.readouterr().out
    assert "stopped worker-2" in out
    assert "local stack stopped" in out
    assert not any(process_alive(pid) for pid in [*first, *_pids(state_dir)])
    assert not (state_dir / "services.json").exists()


@pytest.mark.slow
def test_logs_follow_prints_new_lines_as_they_come(project: Path) -> None:
    logs = project / ".exportpipe" / "logs"
    logs.mkdir(parents=True)
    (logs / "orchestrator.log").write_text("old line\n")
    (logs / "worker-1.log").write_text("")
    follower = subprocess.Popen(
        [sys.executable, "-c", _CLI, "local", "logs", "-f", "-n", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "orchestrator | old line\n"
        time.sleep(1.0)  # let it take the files' sizes before they grow
        with open(logs / "worker-1.log", "a") as log:
            log.write("half a ")
            log.flush()
            time.sleep(0.5)
            log.write("line\nnext\n")
        assert follower.stdout.readline() == "worker-1     | half a line\n"
        assert follower.stdout.readline() == "worker-1     | next\n"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_follow_emits_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("before\n")
    seen: list[tuple[str, str]] = []
    rounds = iter(range(4))

    def stop() -> bool:
        n = next(rounds, None)
        if n == 1:
            with open(log, "a") as f:
                f.write("x\ny")
        if n == 2:
            with open(log, "a") as f:
                f.write("z\n")
        return n is None

    follow([("a", log)], lambda name, line: seen.append((name, line)), poll_seconds=0, stop=stop)
    assert seen == [("a", "x"), ("a", "yz")]


@pytest.mark.slow
def test_a_reused_pid_is_not_our_service() -> None:
    """The record's start time must match: a pid the system handed on is left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = process_started_at(other.pid)
        assert started is not None
        record = ServiceRecord(
            name="worker-1", pid=other.pid, started=started, log_file="x", config="c"
        )
        assert record.is_running()
        stale = ServiceRecord(
            name="worker-1", pid=other.pid, started=started - 60, log_file="x", config="c"
        )
        assert not stale.is_running()
    finally:
        other.kill()
        other.wait()


def test_exports_spec_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps({"export_id": "x", "generated": -1}))
    with pytest.raises(CliError, match=r"--exports .*spec.json: generated: .*docs/simulator.md"):
        load_exports(bad)
    bad.write_text("{not json")
    with pytest.raises(CliError, match="not JSON"):
        load_exports(bad)
    with pytest.raises(CliError, match="No such file"):
        load_exports(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"export_id": "mine", "generated": 3}]))
    config = load_exports(good)
    assert [e.export_id for e in config.exports] == ["mine"]
    assert config.token == default_exports().token  # a file without a token gets the local one
