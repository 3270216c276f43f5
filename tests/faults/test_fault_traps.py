"""Fault traps (ADR 0020): workers SIGKILLed mid part upload and mid checkpoint write.

A file of its own, so its run and the short fault run can go to different
pytest-xdist workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

TRAPS = ("worker_kill_mid_part", "worker_kill_mid_checkpoint")


@pytest.fixture(scope="module")
def trap_run(
    tmp_path_factory: pytest.TempPathFactory, run_faults: Callable[..., Any]
) -> tuple[int, dict[str, Any], str]:
    """Workers SIGKILLed mid part upload and mid checkpoint write (ADR 0020).

    Seed 6 with 40 files has two large files of several parts (8.2 and 6.3 MB, 5 MiB
    parts), whose jobs write checkpoints and upload parts while the traps wait.
    """
    out = tmp_path_factory.mktemp("traps")
    done = run_faults(
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
    trap_run: tuple[int, dict[str, Any], str], must_be_zero: tuple[str, ...]
) -> None:
    code, ledger, stdout = trap_run
    figures = ledger["figures"]
    # Each trap caught its request and its sender was killed while it was held.
    assert {kind: figures[f"fault_{kind}"] for kind in TRAPS} == dict.fromkeys(TRAPS, 1)
    assert "SIGKILL worker slot" in stdout
    assert "during PUT " in stdout
    assert "/checkpoints/" in stdout
    assert {k: figures[k] for k in must_be_zero} == dict.fromkeys(must_be_zero, 0), ledger[
        "details"
    ]
    assert figures["landed"] == 37
    assert code == 0, stdout[-3000:]
