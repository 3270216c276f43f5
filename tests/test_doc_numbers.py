"""Sizing numbers quoted in the docs come from ``exportpipe.common.sizing``.

A number in prose drifts (issue 17 found a 60 s cooldown that had been 180 s, and
"SQS 1 dead-letters after 5 receives" when it was 15). So every such number is written
inside a marker naming its source,

    <!--sizing:worker_scaling.scale_out_cooldown_seconds-->180<!--/sizing-->

(invisible when rendered), and this test checks each marked value against
``DEFAULT_DEPLOYMENT``. The drift-prone facts below must be marked where they appear.
"""

from __future__ import annotations

import re
from functools import reduce
from pathlib import Path

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [REPO / "README.md", REPO / "infra" / "cdk" / "README.md", *(REPO / "docs").glob("*.md")]
)
MARKER = re.compile(r"<!--sizing:(?P<path>[a-z_.]+)-->(?P<value>[^<]*)<!--/sizing-->")


def sizing_value(path: str) -> str:
    """The value at ``path`` (attributes and properties) of ``DEFAULT_DEPLOYMENT``, as text."""
    value = reduce(getattr, path.split("."), DEFAULT_DEPLOYMENT)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def markers(text: str) -> list[tuple[str, str]]:
    return [(m["path"], m["value"]) for m in MARKER.finditer(text)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_marked_number_is_the_sizing_value(doc):
    wrong = [
        f"{path}: doc says {value!r}, sizing says {sizing_value(path)!r}"
        for path, value in markers(doc.read_text())
        if value.strip() != sizing_value(path)
    ]
    assert wrong == []


REQUIRED = {
    "infra/cdk/README.md": [
        "worker_scaling.scale_out_cooldown_seconds",
        "worker_scaling.scale_in_cooldown_seconds",
        "worker_scaling.scale_in_evaluation_periods",
        "worker_scaling.drain_after_minutes",
        "worker_scaling.drain_grace_minutes",
        "worker_scaling.release_bound_minutes",
        "worker.max_tasks",
    ],
    "docs/operations.md": [
        "requests_queue.visibility_timeout_seconds",
        "requests_queue.max_receive_count",
        "jobs_queue.visibility_timeout_seconds",
        "jobs_queue.max_receive_count",
    ],
}


@pytest.mark.parametrize("doc", sorted(REQUIRED))
def test_drift_prone_numbers_are_marked(doc):
    found = {path for path, _ in markers((REPO / doc).read_text())}
    assert set(REQUIRED[doc]) <= found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unmarked_scaling_cooldown(doc):
    # Outside a marker, "cooldown 60 s" is exactly what drifted. (planner.md discusses
    # the cooldowns the planner compared, on purpose.)
    text = MARKER.sub("", doc.read_text()).replace("\n", " ")
    assert doc.name == "planner.md" or not re.search(r"cooldown \d+ s", text)


def test_infra_readme_no_longer_says_the_heartbeat_is_unwired():
    text = (REPO / "infra" / "cdk" / "README.md").read_text()
    assert "not yet wired" not in text
    assert "task definitions define none" not in text


def test_marker_checker_can_fail():
    assert markers("<!--sizing:jobs_queue.max_receive_count-->5<!--/sizing-->") == [
        ("jobs_queue.max_receive_count", "5")
    ]
    assert sizing_value("jobs_queue.max_receive_count") != "5"
    assert sizing_value("worker_scaling.release_bound_minutes") == str(
        DEFAULT_DEPLOYMENT.worker_scaling.release_bound_minutes
    )
