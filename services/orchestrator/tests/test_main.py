"""``exportpipe-orchestrator`` as a real process: start, fan out an export, stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from exportpipe.common.schemas import job_id_for
from exportpipe.common.settings import SettingsError
from exportpipe.orchestrator.__main__ import main
from exportpipe.tools.simulator import ExportSpec

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.slow


def process_env(stack: Stack) -> dict[str, str]:
    s = stack.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTPIPE_")}
    env.update(
        {
            "EXPORTPIPE_BUCKET": s.bucket,
            "EXPORTPIPE_REQUESTS_QUEUE_URL": s.requests_queue_url,
            "EXPORTPIPE_REQUESTS_DLQ_URL": s.requests_dlq_url,
            "EXPORTPIPE_JOBS_QUEUE_URL": s.jobs_queue_url,
            "EXPORTPIPE_EXPORT_API_URL": s.export_api_url,
            "EXPORTPIPE_EXPORT_API_TOKEN": s.export_api_token.get_secret_value(),
            "EXPORTPIPE_PAGE_SIZE": "7",
            "EXPORTPIPE_WAIT_TIME_SECONDS": "1",
            "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": "5",
            "EXPORTPIPE_LOG_LEVEL": "INFO",
        }
    )
    return env


def test_process_fans_out_and_stops_cleanly_on_sigterm(stack: Stack) -> None:
    export = ExportSpec.mixed("exp-proc", 30)
    stack.sim.add_export(export)
    stack.submit("exp-proc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exportpipe.orchestrator"],
        env=process_env(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        expected = {job_id_for("exp-proc", export.file(i).file_id) for i in range(30)}
        jobs = stack.collect_until(expected, timeout=60)
        assert len(jobs) == 30
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out.decode()[-2000:]
    logs = out.decode()
    assert '"page done"' in logs
    assert "consumer stopped" in logs
    assert stack.settings.export_api_token.get_secret_value() not in logs
    assert "sig=" not in logs  # presigned-style query strings never reach the logs


def test_main_refuses_to_start_without_settings(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = process_env(stack)
    del env["EXPORTPIPE_EXPORT_API_TOKEN"]
    monkeypatch.delenv("EXPORTPIPE_EXPORT_API_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match="EXPORTPIPE_EXPORT_API_TOKEN"):
        main()


def test_main_refuses_an_unknown_source(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in {**process_env(stack), "EXPORTPIPE_EXPORT_SOURCE": "nope"}.items():
        monkeypatch.setenv(key, value)
    assert main() == 2
    assert "not a known export source" in capsys.readouterr().err
