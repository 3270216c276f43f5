"""The orchestrator records listed pages once, before their jobs, and export failures."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from exportpipe.common.errors import UpstreamRejected
from exportpipe.common.schemas import ExportRequested
from exportpipe.common.tracking import ExportTracker
from exportpipe.tools.simulator import ExportSpec

if TYPE_CHECKING:
    from conftest import Stack


@pytest.fixture
def tracked(stack: Stack, moto_server: str) -> tuple[Stack, ExportTracker]:
    table = f"t-{uuid.uuid4().hex[:8]}"
    tracker = ExportTracker(boto3.client("dynamodb"), table)
    tracker.create_table()
    return stack.with_settings(table=table), tracker


def test_pages_recorded_once_and_listing_completes(
    tracked: tuple[Stack, ExportTracker], wait_until: Any
) -> None:
    stack, tracker = tracked
    export = ExportSpec.mixed("exp-track", 25, page_size=100, empty_pages={1})
    stack.sim.add_export(export)
    orchestrator = stack.direct_handler()
    first = ExportRequested(export_id="exp-track")
    orchestrator.handler(stack.context(first))
    orchestrator.handler(stack.context(first))  # the same page re-run: counted once
    state = tracker.get("exp-track")
    assert state is not None
    assert (state.pages_listed, state.files_expected, state.listing_complete) == (1, 10, False)
    orchestrator.close()

    stack.submit("exp-track")
    with stack.running():

        def listed() -> bool:
            s = tracker.get("exp-track")
            return s is not None and s.listing_complete

        wait_until(listed)
    state = tracker.get("exp-track")
    assert state is not None
    assert state.pages_listed == 4  # 10, empty, 10, 5
    assert state.files_expected == 25
    assert state.files_outstanding == 25
    assert state.prefix == "exports/exp-track/"
    assert state.status == "listing"
    assert len({j.job_id for j in stack.drain_jobs()}) == 25


def test_export_level_failure_marks_the_export_failed(
    tracked: tuple[Stack, ExportTracker],
) -> None:
    stack, tracker = tracked
    stack.sim.add_export(ExportSpec.mixed("exp-gone", 3, final_status="expired"))
    orchestrator = stack.direct_handler()
    with pytest.raises(UpstreamRejected):
        orchestrator.handler(stack.context(ExportRequested(export_id="exp-gone")))
    orchestrator.close()
    state = tracker.get("exp-gone")
    assert state is not None
    assert state.status == "failed"
    assert state.failure_reason is not None
    assert state.failure_reason.startswith("export_expired")


def test_an_entry_rejected_at_listing_is_counted_and_the_export_can_complete(
    tracked: tuple[Stack, ExportTracker], s3: Any
) -> None:
    from exportpipe.tools.simulator import FileSpec

    stack, tracker = tracked
    good = FileSpec(file_id="g1", name="g1.jsonl", kind="jsonl")
    bad = FileSpec(file_id="..", name="up.jsonl", kind="jsonl")
    stack.sim.add_export(ExportSpec(export_id="exp-mixed", files=(good, bad)))
    orchestrator = stack.direct_handler()
    orchestrator.handler(stack.context(ExportRequested(export_id="exp-mixed")))
    orchestrator.close()
    state = tracker.get("exp-mixed")
    assert state is not None
    assert (state.files_expected, state.files_rejected, state.files_outstanding) == (2, 1, 1)
    (job,) = stack.drain_jobs()
    assert tracker.record_file(
        "exp-mixed",
        job.file_id,
        "done",
        size=1,
        detail="k",
        bucket="exports-bucket",
        prefix="exports/exp-mixed/",
    )
    state = tracker.get("exp-mixed")
    assert state is not None
    assert state.files_outstanding == 0
