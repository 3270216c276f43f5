"""The short fault run (``make test``): a few dozen files, a handful of faults, the ledger.

It runs ``python -m bench.faults`` as ``make faults`` does (the ``bench`` package is
importable from the repository root, not from the test runner), with one fault of each
kind below, and checks the exit status and the ledger's JSON: nothing lost, duplicated,
torn or left open, every bad input dead-lettered with its reason, every fault injected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KINDS = (
    "worker_kill",
    "orchestrator_term",
    "api_429",
    "api_5xx",
    "truncated_bodies",
    "duplicate_jobs",
    "garbage_requests",
    "garbage_jobs",
    "wrong_version_jobs",
    "s3_slowdown",
    "s3_lost_response",
    "sqs_throttle",
)
MUST_BE_ZERO = (
    "lost",
    "misclassified",
    "duplicated_or_torn",
    "open_uploads",
    "checkpoints_left",
    "tracking_mismatches",
    "dlq_unexplained",
    "dlq_missing",
    "crashes",
    "unclean_stops",
    "secrets_in_logs",
)


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EXPORTPIPE_"))}
    return subprocess.run(
        [sys.executable, "-m", "bench.faults", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("faults")
    done = _bench(
        "--seed",
        "7",
        "--files",
        "24",
        "--workers",
        "2",
        "--duration",
        "12",
        "--kinds",
        ",".join(KINDS),
        "--json",
        str(out / "ledger.json"),
        "--state-dir",
        str(out / "state"),
        timeout=240,
    )
    assert (out / "ledger.json").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads((out / "ledger.json").read_text()), done.stdout


def test_short_run_loses_nothing(short_run: tuple[int, dict[str, Any], str]) -> None:
    code, ledger, stdout = short_run
    figures = ledger["figures"]
    assert {k: figures[k] for k in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), ledger[
        "details"
    ]
    assert ledger["failures"] == []
    assert code == 0, stdout[-3000:]
    assert "PASS: every must-be-zero figure is zero" in stdout


def test_every_file_has_its_outcome(short_run: tuple[int, dict[str, Any], str]) -> None:
    figures = short_run[1]["figures"]
    good, bad = (int(n) for n in figures["files_good"].split(" / "))
    assert figures["files_expected"] == good + bad == 24
    assert figures["landed"] == good
    assert figures["rejected_correctly"] == bad == 3
    assert figures["dlq_corrupt"] >= bad
    assert figures["dlq_hostile"] == "13 (of 13 injected)"  # 5 on SQS 1, 7 + 1 on SQS 2
    assert figures["left_in_flight"] == 0


def test_every_scheduled_fault_was_injected(short_run: tuple[int, dict[str, Any], str]) -> None:
    figures = short_run[1]["figures"]
    assert {kind: figures[f"fault_{kind}"] for kind in KINDS} == dict.fromkeys(KINDS, 1)
    assert figures["duplicates_sent"] == 6
    assert figures["api_errors_served"] > 0  # the 429 and the 5xx burst reached a client


TRAPS = ("worker_kill_mid_part", "worker_kill_mid_checkpoint")


@pytest.fixture(scope="module")
def trap_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """Workers SIGKILLed mid part upload and mid checkpoint write (ADR 0020).

    Seed 6 with 40 files has two large files of several parts (8.2 and 6.3 MB, 5 MiB
    parts), whose jobs write checkpoints and upload parts while the traps wait.
    """
    out = tmp_path_factory.mktemp("traps")
    done = _bench(
        "--seed",
        "6",
        "--files",
        "40",
        "--workers",
        "2",
        "--duration",
        "12",
        "--kinds",
        ",".join(TRAPS),
        "--json",
        str(out / "ledger.json"),
        "--state-dir",
        str(out / "state"),
        timeout=400,
    )
    assert (out / "ledger.json").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads((out / "ledger.json").read_text()), done.stdout


def test_kills_mid_part_and_mid_checkpoint_lose_nothing(
    trap_run: tuple[int, dict[str, Any], str],
) -> None:
    code, ledger, stdout = trap_run
    figures = ledger["figures"]
    # Each trap caught its request and its sender was killed while it was held.
    assert {kind: figures[f"fault_{kind}"] for kind in TRAPS} == dict.fromkeys(TRAPS, 1)
    assert "SIGKILL worker slot" in stdout
    assert "during PUT " in stdout
    assert "/checkpoints/" in stdout
    assert {k: figures[k] for k in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), ledger[
        "details"
    ]
    assert figures["landed"] == 37
    assert code == 0, stdout[-3000:]


def test_same_seed_same_schedule() -> None:
    args = ("--files", "24", "--duration", "12", "--plan-only")
    first = _bench("--seed", "7", *args, timeout=60)
    again = _bench("--seed", "7", *args, timeout=60)
    other = _bench("--seed", "8", *args, timeout=60)
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr
    assert "schedule (" in first.stdout
    assert first.stdout == again.stdout
    assert first.stdout != other.stdout
