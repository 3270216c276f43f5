"""What the fault-suite tests share: how to run ``python -m bench.faults``, what must be 0.

It runs the bench as ``make faults`` does (the ``bench`` package is importable from the
repository root, not from the test runner). Session fixtures, so each test file's own
module-scoped run may go to its own pytest-xdist worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


@pytest.fixture(scope="session")
def run_faults() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_faults(*args, timeout=...)``: ``python -m bench.faults *args``, completed."""
    return _bench


@pytest.fixture(scope="session")
def must_be_zero() -> tuple[str, ...]:
    """The ledger figures every run must end with at 0."""
    return MUST_BE_ZERO
