"""The real processes end to end: simulator -> orchestrator -> SQS -> workers -> S3.

One local stack and one simulator serve the module (see ``conftest.py``); each test
runs its own export with its own service processes.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import pytest

from exportpipe.common.layout import ExportManifest
from exportpipe.common.tracking import ExportState
from exportpipe.tools import cli
from exportpipe.tools.demo import CORRUPT_FILE_ID, demo_export
from exportpipe.tools.dlq import list_dead_letters
from exportpipe.tools.simulator import ExportSpec, Fault, RandomFaults, expected_files
from exportpipe.tools.submit import submit_export
from exportpipe.tools.verify import VerifyReport, verify_export

if TYPE_CHECKING:
    from conftest import E2EStack

pytestmark = pytest.mark.e2e


def _verify(e2e: E2EStack, spec: ExportSpec) -> VerifyReport:
    return verify_export(e2e.stack.client("s3"), e2e.bucket, e2e.root(spec.export_id), spec)


def _open_uploads(e2e: E2EStack, export_id: str) -> list[str]:
    uploads = e2e.stack.client("s3").list_multipart_uploads(
        Bucket=e2e.bucket, Prefix=e2e.root(export_id)
    )
    return [u["Key"] for u in uploads.get("Uploads", [])]


# ------------------------------------------------------------------ mixed export


@dataclass
class MixedRun:
    spec: ExportSpec
    state: ExportState
    report: VerifyReport
    exit_codes: dict[str, int]


@pytest.fixture(scope="module")
def mixed(e2e: E2EStack) -> MixedRun:
    """A mixed export (one corrupt file, one without declared compression), run once."""
    spec = e2e.add_export(demo_export("e2e-mixed", 30, file_size=64 * 1024))
    services = e2e.services("mixed")
    with services:
        services.orchestrator()
        services.worker("worker-1")
        services.worker("worker-2")
        submit_export(e2e.stack, spec.export_id)
        state = e2e.wait_finished(spec, services)
        e2e.wait_until(lambda: e2e.jobs_backlog() == 0, "SQS 2 to drain", services)
        codes = services.stop_all()
    return MixedRun(spec=spec, state=state, report=_verify(e2e, spec), exit_codes=codes)


def test_mixed_export_lands_completely_and_byte_exact(mixed: MixedRun) -> None:
    report = mixed.report
    assert [(v.file_id, v.problem) for v in report.problems] == []
    assert len(report.landed) == mixed.spec.count - 1
    kinds = {mixed.spec.file(i).kind for i in range(mixed.spec.count)}
    assert {"jsonl.gz", "jsonl.zst", "csv.zip", "jsonl.tar.gz", "csv.tar", "jsonl", "bin"} <= kinds
    assert all(code == 0 for code in mixed.exit_codes.values()), mixed.exit_codes


def test_corrupt_file_is_rejected_and_dead_lettered_with_its_reason(
    e2e: E2EStack, mixed: MixedRun
) -> None:
    [rejected] = mixed.report.rejected
    assert rejected.file_id == CORRUPT_FILE_ID
    assert rejected.reason == "sha256_mismatch"
    key = f"{e2e.root('e2e-mixed')}rejected/{CORRUPT_FILE_ID}.json"
    body = e2e.stack.client("s3").get_object(Bucket=e2e.bucket, Key=key)["Body"]
    record = orjson.loads(body.read())
    assert (record["error"], record["reason"]) == ("IntegrityError", "sha256_mismatch")
    letters = [
        d
        for d in list_dead_letters(e2e.stack, ("jobs",))
        if d.summary == f"export=e2e-mixed file={CORRUPT_FILE_ID}"
    ]
    assert len(letters) == 1
    [letter] = letters
    assert (letter.reason, letter.error_type) == ("sha256_mismatch", "IntegrityError")
    assert "sha256" in letter.error_message
    assert "sig=" not in letter.error_message  # the signed URL's query string stays out
    assert _open_uploads(e2e, "e2e-mixed") == []


def test_tracking_manifest_and_event_for_the_mixed_export(
    e2e: E2EStack, mixed: MixedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    state, count = mixed.state, mixed.spec.count
    assert state.status == "completed_with_errors"
    assert (state.files_expected, state.files_done, state.files_rejected) == (count, count - 1, 1)
    assert state.files_outstanding == 0
    # The tracker counts bytes downloaded: the good files' listed (compressed) sizes.
    assert state.bytes == sum(
        item.content.listed_size for item in expected_files(mixed.spec) if not item.spec.corrupt
    )
    assert state.manifest_key == f"{e2e.root('e2e-mixed')}_manifest.json"
    raw = e2e.stack.client("s3").get_object(Bucket=e2e.bucket, Key=state.manifest_key)["Body"]
    raw = raw.read()
    manifest = orjson.loads(raw)
    # The streamed document is a valid ExportManifest of the output contract.
    assert ExportManifest.from_json(raw).files_done == count - 1
    assert len(manifest["files"]) == count - 1
    assert [(r["file_id"], r["reason"].split(":")[0]) for r in manifest["rejected"]] == [
        (CORRUPT_FILE_ID, "sha256_mismatch")
    ]
    [event] = e2e.completion_events("e2e-mixed")
    assert (event["status"], event["files_done"], event["files_rejected"]) == (
        "completed_with_errors",
        count - 1,
        1,
    )
    assert event["manifest"] == f"s3://{e2e.bucket}/{state.manifest_key}"
    # The operator's view agrees.
    assert cli.main(["--env-file", str(e2e.up.env_file), "status", "e2e-mixed", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["status"], status["files_done"], status["stalled"]) == (
        "completed_with_errors",
        count - 1,
        False,
    )
    assert status["rejected"][0]["file_id"] == CORRUPT_FILE_ID


# --------------------------------------------------------------- worker faults


def test_killed_and_stopped_workers_lose_nothing(e2e: E2EStack) -> None:
    """SIGKILL one busy worker, SIGTERM another; every file still lands exactly once."""
    # Throttled downloads keep every job slot busy for a second or two, so the kills
    # below hit workers in the middle of jobs.
    spec = e2e.add_export(
        ExportSpec.mixed(
            "e2e-workers",
            32,
            seed=5,
            file_size=48 * 1024,
            page_size=10,
            faults=RandomFaults(download_bytes_per_second=24 * 1024),
        )
    )
    services = e2e.services("workers")
    with services:
        services.orchestrator()
        doomed = services.worker("worker-killed", EXPORTPIPE_CONCURRENCY="3")
        stopped = services.worker("worker-stopped", EXPORTPIPE_CONCURRENCY="3")
        submit_export(e2e.stack, spec.export_id)
        e2e.wait_until(
            lambda: e2e.outcomes_in_s3(spec.export_id)[0] >= 4, "4 files landed", services
        )
        assert e2e.jobs_backlog() > 0  # work is still in flight when the worker dies
        services.expected_dead.add(doomed.name)
        assert doomed.kill() == -signal.SIGKILL
        services.worker("worker-replacement", EXPORTPIPE_CONCURRENCY="3")
        e2e.wait_until(
            lambda: e2e.outcomes_in_s3(spec.export_id)[0] >= 12, "12 files landed", services
        )
        services.expected_dead.add(stopped.name)
        stopped.signal(signal.SIGTERM)
        assert stopped.wait(timeout=30) == 0  # a clean, prompt shutdown
        state = e2e.wait_finished(spec, services, timeout=90)
        e2e.wait_until(lambda: e2e.jobs_backlog() == 0, "SQS 2 to drain", services)
    report = _verify(e2e, spec)
    assert [(v.file_id, v.problem) for v in report.problems] == []
    assert len(report.landed) == spec.count
    assert (state.status, state.files_done, state.files_rejected) == ("completed", spec.count, 0)
    assert _open_uploads(e2e, spec.export_id) == []
    assert not [
        d for d in list_dead_letters(e2e.stack) if d.summary.startswith("export=e2e-workers ")
    ]


# ------------------------------------------------------------ orchestrator restart


def test_restarted_orchestrator_leaves_no_gaps(e2e: E2EStack) -> None:
    """Kill the orchestrator between pages; its replacement finishes the listing."""
    export_id = "e2e-orchestrator"
    spec = e2e.add_export(
        ExportSpec.mixed(
            export_id,
            48,
            seed=9,
            file_size=8 * 1024,
            page_size=4,
            # Slow pages, so the kill lands in the middle of the listing.
            scripted=(Fault(route="listing", export_id=export_id, delay_seconds=0.4, times=1000),),
        )
    )
    services = e2e.services("orchestrator")
    with services:
        first = services.orchestrator("orchestrator-1")
        services.worker("worker-1")
        services.worker("worker-2")
        submit_export(e2e.stack, export_id)
        e2e.wait_until(lambda: e2e.listing_requests(export_id) >= 3, "3 pages listed", services)
        services.expected_dead.add(first.name)
        assert first.kill() == -signal.SIGKILL
        listed_before_restart = e2e.listing_requests(export_id)
        assert listed_before_restart < spec.count // 4  # the listing really was cut short
        services.orchestrator("orchestrator-2")
        state = e2e.wait_finished(spec, services, timeout=90)
        e2e.wait_until(lambda: e2e.jobs_backlog() == 0, "SQS 2 to drain", services)
    report = _verify(e2e, spec)
    assert [(v.file_id, v.problem) for v in report.problems] == []
    assert len(report.landed) == spec.count
    # Re-listed pages and re-sent jobs never count twice.
    assert (state.status, state.files_expected, state.files_done) == (
        "completed",
        spec.count,
        spec.count,
    )
    assert state.pages_listed == spec.count // 4
    assert len(e2e.completion_events(export_id)) == 1
