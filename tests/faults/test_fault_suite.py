"""The short fault run (``make test``): a few dozen files, a handful of faults, the ledger.

It runs ``python -m bench.faults`` as ``make faults`` does (``conftest.py``), with one
fault of each kind below, and checks the exit status and the ledger's JSON: nothing
lost, duplicated, torn or left open, every bad input dead-lettered with its reason,
every fault injected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

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


@pytest.fixture(scope="module")
def short_run(
    tmp_path_factory: pytest.TempPathFactory, run_faults: Callable[..., Any]
) -> tuple[int, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("faults")
    done = run_faults(
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


def test_short_run_loses_nothing(
    short_run: tuple[int, dict[str, Any], str], must_be_zero: tuple[str, ...]
) -> None:
    code, ledger, stdout = short_run
    figures = ledger["figures"]
    assert {k: figures[k] for k in must_be_zero} == dict.fromkeys(must_be_zero, 0), ledger[
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


def test_same_seed_same_schedule(run_faults: Callable[..., Any]) -> None:
    args = ("--files", "24", "--duration", "12", "--plan-only")
    first = run_faults("--seed", "7", *args, timeout=60)
    again = run_faults("--seed", "7", *args, timeout=60)
    other = run_faults("--seed", "8", *args, timeout=60)
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr
    assert "schedule (" in first.stdout
    assert first.stdout == again.stdout
    assert first.stdout != other.stdout
