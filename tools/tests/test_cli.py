"""The operator CLI against the session's moto server: submit, status, wait, dlq, errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from rich.console import Console

from exportpipe.common.errors import IntegrityError
from exportpipe.common.schemas import DownloadJob, ExportRequested, S3Destination, decode, encode
from exportpipe.common.sqs import dead_letter_attributes
from exportpipe.common.tracking import ExportTracker
from exportpipe.testing import create_queue_pair, free_port
from exportpipe.tools import cli
from exportpipe.tools.context import Stack
from exportpipe.tools.envfile import write_env_file
from exportpipe.tools.errors import CliError
from exportpipe.tools.status import human_bytes, transfer_rate
from exportpipe.tools.submit import WaitTimeout, exit_code_for, submit_export, wait_for_export

BUCKET = "out-bucket"
PREFIX = "exports/exp-1/"


class Env:
    """An env file describing fresh queues, a table and a bucket on the moto server."""

    def __init__(self, path: Path, values: dict[str, str]) -> None:
        self.path, self.values = path, values
        self.sqs = boto3.client("sqs", endpoint_url=values["AWS_ENDPOINT_URL"])
        self.tracker = ExportTracker(
            boto3.client("dynamodb", endpoint_url=values["AWS_ENDPOINT_URL"]),
            values["EXPORTPIPE_TABLE"],
        )

    def __getitem__(self, key: str) -> str:
        return self.values[key]

    def page(self, export_id: str, page: int, files: int, *, last: bool = False) -> None:
        self.tracker.record_page(
            export_id, page, files, is_last=last, bucket=BUCKET, prefix=f"exports/{export_id}/"
        )

    def file(self, export_id: str, file_id: str, outcome: str = "done", **kw: Any) -> None:
        self.tracker.record_file(
            export_id,
            file_id,
            outcome,  # type: ignore[arg-type]
            bucket=BUCKET,
            prefix=f"exports/{export_id}/",
            **kw,
        )


@pytest.fixture
def env(moto_server: str, sqs: Any, tmp_path: Path) -> Env:
    suffix = uuid.uuid4().hex[:8]
    requests_url, requests_dlq = create_queue_pair(sqs, f"req-{suffix}")
    jobs_url, jobs_dlq = create_queue_pair(sqs, f"jobs-{suffix}")
    table = f"exports-{suffix}"
    ExportTracker(boto3.client("dynamodb"), table).create_table()
    values = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "EXPORTPIPE_REQUESTS_QUEUE_URL": requests_url,
        "EXPORTPIPE_REQUESTS_DLQ_URL": requests_dlq,
        "EXPORTPIPE_JOBS_QUEUE_URL": jobs_url,
        "EXPORTPIPE_JOBS_DLQ_URL": jobs_dlq,
        "EXPORTPIPE_BUCKET": BUCKET,
        "EXPORTPIPE_TABLE": table,
    }
    path = tmp_path / "local.env"
    write_env_file(path, values, header="test stack")
    return Env(path, values)


def run(env: Env | Path, *argv: str) -> int:
    path = env.path if isinstance(env, Env) else env
    return cli.main(["--env-file", str(path), *argv])


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("exportpipe: ")
    return lines[0]


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
    ).get("Messages", []):
        out += batch
    return out


# ----------------------------------------------------------------------- submit


def test_submit_puts_an_export_request_on_sqs1(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(env, "submit", "exp-1", "--tenant", "acme", "--prefix", "exports/acme") == 0
    out = capsys.readouterr().out
    assert "s3://out-bucket/exports/acme/exp-1/" in out
    [message] = receive_all(env.sqs, env["EXPORTPIPE_REQUESTS_QUEUE_URL"])
    request = decode(message["Body"], ExportRequested)
    assert (request.export_id, request.tenant, request.destination_prefix) == (
        "exp-1",
        "acme",
        "exports/acme/",
    )
    assert request.page == 0
    assert request.cursor is None


@pytest.mark.parametrize(("tenant", "group"), [(["--tenant", "acme"], "acme"), ([], "exp-2")])
def test_submit_sends_in_the_tenant_message_group(env: Env, tenant: list[str], group: str) -> None:
    assert run(env, "submit", "exp-2", *tenant) == 0
    [message] = env.sqs.receive_message(
        QueueUrl=env["EXPORTPIPE_REQUESTS_QUEUE_URL"],
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["MessageGroupId"],
    )["Messages"]
    assert message["Attributes"]["MessageGroupId"] == group


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["submit", "bad id!"], "invalid export_id"),
        (["submit", "exp-1", "--prefix", "../escape"], "invalid destination_prefix"),
        (["submit", "exp-1", "--prefix", "elsewhere"], "must be under the output prefix"),
        (["submit"], "required: EXPORT_ID"),
        (["submit", "exp-1", "--wait", "--timeout", "-1"], "must be positive"),
        (["dlq", "list", "--queue", "nope"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert run(env, *argv) == 2
    assert expected in one_line_error(capsys)


# ----------------------------------------------------------------------- status


def test_status_unknown_export_is_one_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(env, "status", "never-submitted") == 2
    line = one_line_error(capsys)
    assert "unknown export 'never-submitted'" in line
    assert env["EXPORTPIPE_TABLE"] in line


def test_status_json_counts_output_and_rejections(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.page("exp-s", 0, 3)
    env.page("exp-s", 1, 2, last=True)
    env.file("exp-s", "a", size=100, detail="exports/exp-s/manifests/a.json")
    env.file("exp-s", "b", "rejected", detail="sha256_mismatch")
    env.sqs.send_message(QueueUrl=env["EXPORTPIPE_JOBS_QUEUE_URL"], MessageBody="{}")
    assert run(env, "status", "exp-s", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "listing"
    assert status["listing_complete"] is True
    assert (status["pages_listed"], status["files_expected"]) == (2, 5)
    assert (status["files_done"], status["files_rejected"], status["files_outstanding"]) == (
        1,
        1,
        3,
    )
    assert status["bytes"] == 100
    assert status["output"] == "s3://out-bucket/exports/exp-s/"
    assert status["manifest"] is None
    assert status["rejected"] == [{"file_id": "b", "reason": "sha256_mismatch"}]
    assert status["jobs_queue"] == {"visible": 1, "in_flight": 0}
    assert status["stalled"] is False


def test_status_reports_a_stalled_export(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.page("exp-stall", 0, 2, last=True)
    last = env.tracker.get("exp-stall")
    assert last is not None
    # Any idle time exceeds a threshold this small; the default threshold is not exceeded.
    assert run(env, "status", "exp-stall", "--json", "--stall-seconds", "0.000001") == 0
    assert json.loads(capsys.readouterr().out)["stalled"] is True
    assert run(env, "status", "exp-stall", "--json") == 0
    assert json.loads(capsys.readouterr().out)["stalled"] is False
    assert run(env, "status", "exp-stall", "--stall-seconds", "0.000001") == 0
    assert "STALLED" in capsys.readouterr().out


def test_status_human_table(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.page("exp-h", 0, 1, last=True)
    env.file("exp-h", "x", "rejected", detail="validation_failed: line 3 is not JSON")
    assert run(env, "status", "exp-h") == 0
    out = capsys.readouterr().out
    for text in ("export exp-h", "files expected", "s3://out-bucket/exports/exp-h/", "line 3"):
        assert text in out


# ------------------------------------------------------------------------- wait


def _complete(env: Env, export_id: str, *, rejected: bool) -> None:
    from exportpipe.common.completion import EventPublisher, ExportCompleter

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket=BUCKET)
    key = f"exports/{export_id}/manifests/a.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"file_id": "a"}')
    env.page(export_id, 0, 2, last=True)
    env.file(export_id, "a", size=10, detail=key)
    if rejected:
        env.file(export_id, "b", "rejected", detail="sha256_mismatch")
    else:
        env.file(export_id, "b", size=10, detail=key)
    assert ExportCompleter(env.tracker, s3, EventPublisher()).complete_if_done(export_id)


@pytest.mark.parametrize(
    ("rejected", "code", "status"),
    [(False, 0, "completed"), (True, 3, "completed_with_errors")],
)
def test_submit_wait_exit_status_says_how_it_ended(
    env: Env, capsys: pytest.CaptureFixture[str], rejected: bool, code: int, status: str
) -> None:
    export_id = f"exp-{uuid.uuid4().hex[:6]}"
    _complete(env, export_id, rejected=rejected)
    assert run(env, "submit", export_id, "--wait", "--timeout", "30") == code
    out = capsys.readouterr().out
    assert f"export {export_id} {status}" in out
    assert f"s3://out-bucket/exports/{export_id}/_manifest.json" in out


def test_submit_wait_failed_export_exits_1(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.tracker.mark_failed(
        "exp-f", "export_failed: upstream says failed", bucket=BUCKET, prefix="exports/exp-f/"
    )
    assert run(env, "submit", "exp-f", "--wait") == 1
    assert "export_failed" in capsys.readouterr().out


def test_submit_wait_times_out_with_one_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(env, "submit", "exp-slow", "--wait", "--timeout", "0.3") == 1
    assert "did not finish within" in one_line_error(capsys)


def test_status_knows_a_submitted_export_before_it_is_listed(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(env, "submit", "exp-new", "--tenant", "acme") == 0
    capsys.readouterr()
    assert run(env, "status", "exp-new", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "submitted"
    assert status["tenant"] == "acme"
    assert status["output"] == "s3://out-bucket/exports/exp-new/"
    assert status["files_expected"] == 0
    assert run(env, "status", "exp-new") == 0
    assert "submitted, not yet listed" in capsys.readouterr().out
    # Once an orchestrator lists it, the tracking record speaks, not the request.
    env.page("exp-new", 0, 4)
    assert run(env, "status", "exp-new", "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "listing"


def test_the_hint_after_a_wait_timeout_works(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(env, "submit", "exp-late", "--wait", "--timeout", "0.3") == 1
    hint = re.search(r"`exportpipe (status [^`]+)`", capsys.readouterr().err)
    assert hint is not None
    assert run(env, *hint.group(1).split()) == 0
    assert "submitted, not yet listed" in capsys.readouterr().out


def test_wait_says_when_no_orchestrator_takes_the_request(env: Env) -> None:
    stack = Stack.load(env.path)
    submit_export(stack, "exp-orphan")
    out = io.StringIO()
    with pytest.raises(WaitTimeout):
        wait_for_export(
            stack,
            "exp-orphan",
            console=Console(file=out, width=60),
            poll_seconds=0.05,
            timeout=0.6,
            pickup_seconds=0.2,
        )
    text = out.getvalue()
    assert text.count("no orchestrator has picked up export exp-orphan") == 1
    assert "`exportpipe local up`" in text
    # An orchestrator that holds the request (in flight) is not "nobody".
    receive_all(env.sqs, env["EXPORTPIPE_REQUESTS_QUEUE_URL"])
    submit_export(stack, "exp-held")
    env.sqs.receive_message(QueueUrl=env["EXPORTPIPE_REQUESTS_QUEUE_URL"], VisibilityTimeout=30)
    out = io.StringIO()
    with pytest.raises(WaitTimeout):
        wait_for_export(
            stack,
            "exp-held",
            console=Console(file=out, width=60),
            poll_seconds=0.05,
            timeout=0.6,
            pickup_seconds=0.2,
        )
    assert "no orchestrator" not in out.getvalue()


def test_wait_prints_whole_lines_when_not_a_terminal(env: Env) -> None:
    """Piped output gets one whole line per change, never a bar cut to the width."""
    export_id = "exp-piped-with-a-long-name"
    steps = [
        lambda: env.page(export_id, 0, 2),
        lambda: env.page(export_id, 1, 1, last=True),
        lambda: env.file(export_id, "a", size=5, detail="k"),
        lambda: env.file(export_id, "b", size=5, detail="k"),
        lambda: env.file(export_id, "c", "rejected", detail="too_big"),
        lambda: env.tracker.mark_completed(
            export_id, status="completed_with_errors", manifest_key="m"
        ),
    ]
    out = io.StringIO()
    console = Console(file=out, width=40)
    assert not console.is_terminal
    state = wait_for_export(
        Stack.load(env.path),
        export_id,
        console=console,
        poll_seconds=0.01,
        check=lambda: steps.pop(0)() if steps else None,
    )
    lines = out.getvalue().splitlines()
    assert "…" not in out.getvalue()
    assert lines[0] == f"{export_id} waiting for an orchestrator"
    assert lines[1].startswith(f"{export_id} listing (page 1): 0/2+ files · 0 rejected · 0 B")
    rate = f"{human_bytes(transfer_rate(state, 0))}/s"
    assert lines[-1] == f"{export_id} completed_with_errors: 3/3 files · 1 rejected · 10 B · {rate}"
    assert len(lines) == 7  # one line per change, not one per poll


def test_wait_follows_progress_until_complete(env: Env) -> None:
    """Each poll moves the export one step on; the wait ends when the export completes."""
    export_id = "exp-progress"
    steps = [
        lambda: env.page(export_id, 0, 2),
        lambda: env.page(export_id, 1, 1, last=True),
        lambda: env.file(export_id, "a", size=5, detail="k"),
        lambda: env.file(export_id, "b", size=5, detail="k"),
        lambda: env.file(export_id, "c", "rejected", detail="too_big"),
        lambda: env.tracker.mark_completed(
            export_id, status="completed_with_errors", manifest_key="m"
        ),
    ]
    polls: list[int] = []

    def advance() -> None:
        polls.append(1)
        if steps:
            steps.pop(0)()

    console = Console(file=open("/dev/null", "w"), force_terminal=True)  # noqa: SIM115
    try:
        state = wait_for_export(
            Stack.load(env.path), export_id, console=console, poll_seconds=0.01, check=advance
        )
    finally:
        console.file.close()
    assert state.status == "completed_with_errors"
    assert (state.files_expected, state.files_done, state.files_rejected) == (3, 2, 1)
    assert state.bytes == 10
    assert len(polls) == 6  # checked after each unfinished read; the 7th read is final
    assert exit_code_for(state) == 3


def test_wait_stops_when_the_check_raises(env: Env) -> None:
    def dead() -> None:
        raise CliError("worker-1 exited", exit_code=1)

    with pytest.raises(CliError, match="worker-1 exited"):
        wait_for_export(
            Stack.load(env.path),
            "exp-x",
            console=Console(quiet=True),
            poll_seconds=0.01,
            check=dead,
        )


# -------------------------------------------------------------------------- dlq


def _job(export_id: str, file_id: str) -> DownloadJob:
    from exportpipe.common.schemas import job_id_for

    return DownloadJob(
        job_id=job_id_for(export_id, file_id),
        export_id=export_id,
        file_id=file_id,
        file_name=f"{file_id}.jsonl.gz",
        url=f"https://files.example.com/{file_id}?X-Amz-Signature=secret123",
        destination=S3Destination(bucket=BUCKET, prefix=f"exports/{export_id}/"),
    )


@pytest.fixture
def dead_letters(env: Env) -> dict[str, str]:
    """One runtime dead letter on each DLQ, and one the redrive policy moved."""
    jobs_url = env["EXPORTPIPE_JOBS_QUEUE_URL"]
    job = env.sqs.send_message(
        QueueUrl=env["EXPORTPIPE_JOBS_DLQ_URL"],
        MessageBody=encode(_job("exp-d", "f1")),
        MessageAttributes=dead_letter_attributes(
            IntegrityError("f1.jsonl.gz: sha256 differs", reason="sha256_mismatch"),
            source_queue=jobs_url,
            receive_count=1,
        ),
    )["MessageId"]
    moved = env.sqs.send_message(
        QueueUrl=env["EXPORTPIPE_JOBS_DLQ_URL"], MessageBody=encode(_job("exp-d", "f2"))
    )["MessageId"]
    request = env.sqs.send_message(
        QueueUrl=env["EXPORTPIPE_REQUESTS_DLQ_URL"],
        MessageBody=encode(ExportRequested(export_id="exp-d", page=3, cursor="c3")),
        MessageAttributes=dead_letter_attributes(
            IntegrityError("listing entry 4 has no url", reason="invalid_listing_entry"),
            source_queue=env["EXPORTPIPE_REQUESTS_QUEUE_URL"],
            receive_count=2,
        ),
    )["MessageId"]
    return {"job": job, "moved": moved, "request": request}


def test_dlq_list_shows_reasons_and_leaves_messages_in_place(
    env: Env, dead_letters: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(env, "dlq", "list", "--json") == 0
    letters = {d["message_id"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(letters) == set(dead_letters.values())
    job = letters[dead_letters["job"]]
    assert (job["queue"], job["reason"], job["error_type"]) == (
        "jobs",
        "sha256_mismatch",
        "IntegrityError",
    )
    assert job["summary"] == "export=exp-d file=f1"
    assert job["receive_count"] == 1
    assert letters[dead_letters["moved"]]["reason"] == "max_receives_exceeded"
    request = letters[dead_letters["request"]]
    assert (request["queue"], request["reason"], request["summary"]) == (
        "requests",
        "invalid_listing_entry",
        "export=exp-d page=3",
    )
    # Listing again shows the same messages: the scan made them visible again.
    assert run(env, "dlq", "list", "--queue", "jobs", "--json") == 0
    again = {d["message_id"] for d in json.loads(capsys.readouterr().out)}
    assert again == {dead_letters["job"], dead_letters["moved"]}
    assert run(env, "dlq", "list") == 0
    assert "sha256_mismatch" in capsys.readouterr().out


def test_dlq_show_redacts_the_signed_url(
    env: Env, dead_letters: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(env, "dlq", "show", dead_letters["job"][:8]) == 0
    out = capsys.readouterr().out
    assert "sha256_mismatch" in out
    assert "https://files.example.com/f1" in out
    assert "secret123" not in out
    assert run(env, "dlq", "show", "no-such-message") == 2
    assert "no dead letter with message id" in one_line_error(capsys)


def test_dlq_redrive_one_then_all(
    env: Env, dead_letters: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(env, "dlq", "redrive", "--id", dead_letters["job"]) == 0
    assert "1 message(s)" in capsys.readouterr().out
    [back] = receive_all(env.sqs, env["EXPORTPIPE_JOBS_QUEUE_URL"])
    job = decode(back["Body"], DownloadJob)
    assert job.file_id == "f1"
    assert job.url.endswith("X-Amz-Signature=secret123")  # the body goes back unchanged
    # The error attributes stay behind; the redrive mark says an earlier attempt ran.
    assert set(back.get("MessageAttributes", {})) == {"exportpipe-redriven"}
    assert run(env, "dlq", "redrive") == 0
    assert "2 message(s)" in capsys.readouterr().out
    [request] = receive_all(env.sqs, env["EXPORTPIPE_REQUESTS_QUEUE_URL"])
    assert decode(request["Body"], ExportRequested).cursor == "c3"
    assert [
        decode(m["Body"], DownloadJob).file_id
        for m in receive_all(env.sqs, env["EXPORTPIPE_JOBS_QUEUE_URL"])
    ] == ["f2"]
    assert run(env, "dlq", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(env, "dlq", "redrive") == 0
    assert "nothing to redrive" in capsys.readouterr().out


def test_dlq_redrive_restores_the_tenant_message_group(
    env: Env, dead_letters: dict[str, str]
) -> None:
    env.sqs.send_message(QueueUrl=env["EXPORTPIPE_JOBS_DLQ_URL"], MessageBody="{not json")
    assert run(env, "dlq", "redrive") == 0
    groups = sorted(
        (m["Body"] == "{not json", m.get("Attributes", {}).get("MessageGroupId"))
        for url in ("EXPORTPIPE_JOBS_QUEUE_URL", "EXPORTPIPE_REQUESTS_QUEUE_URL")
        for m in env.sqs.receive_message(
            QueueUrl=env[url], MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
        )["Messages"]
    )
    # Two jobs and a request of export exp-d; the unreadable body goes back without one.
    assert groups == [(False, "exp-d"), (False, "exp-d"), (False, "exp-d"), (True, None)]


# ----------------------------------------------------------------------- errors


def test_no_stack_running_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dead.env"
    write_env_file(
        path,
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "EXPORTPIPE_REQUESTS_QUEUE_URL": "http://127.0.0.1:1/q",
            "EXPORTPIPE_TABLE": "t",
        },
    )
    for argv in (["status", "x"], ["submit", "x"], ["dlq", "list"]):
        assert run(path, *argv) == 2
        assert "cannot reach the AWS endpoint" in one_line_error(capsys)


def test_missing_settings_name_the_variable(
    tmp_path: Path, moto_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "partial.env"
    write_env_file(path, {"AWS_ENDPOINT_URL": moto_server, "AWS_DEFAULT_REGION": "us-east-1"})
    assert run(path, "submit", "x") == 2
    line = one_line_error(capsys)
    assert "EXPORTPIPE_REQUESTS_QUEUE_URL is not set" in line
    assert str(path) in line
    assert run(path, "dlq", "list") == 2
    assert "EXPORTPIPE_REQUESTS_QUEUE_URL is not set" in one_line_error(capsys)


def test_missing_env_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path / "nope.env", "status", "x") == 2
    assert "env file not found" in one_line_error(capsys)


def test_a_deleted_queue_is_one_line(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.sqs.delete_queue(QueueUrl=env["EXPORTPIPE_REQUESTS_QUEUE_URL"])
    assert run(env, "submit", "x") == 2
    line = one_line_error(capsys)
    assert "queue does not exist" in line
    assert "exportpipe local up" in line


def test_plan_is_delegated_to_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    from exportpipe.tools import planner

    seen: list[list[str]] = []
    monkeypatch.setattr(planner, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["plan", "--events-per-day", "10", "--no-plot"]) == 7
    assert seen == [["--events-per-day", "10", "--no-plot"]]


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, as an operator runs it, with no stack running."""
    path = tmp_path / "dead.env"
    write_env_file(
        path,
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "EXPORTPIPE_TABLE": "t",
        },
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from exportpipe.tools.cli import main; sys.exit(main())",
            "--env-file",
            str(path),
            "status",
            "exp-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("exportpipe: cannot reach the AWS endpoint")
    assert time.monotonic() - started < 30


def test_stall_threshold_follows_the_stack_setting(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env.page("exp-st", 0, 1, last=True)
    write_env_file(env.path, {**env.values, "EXPORTPIPE_STALL_SECONDS": "0.000001"})
    assert run(env, "status", "exp-st", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["stalled"], status["stall_seconds"]) == (True, 0.000001)
    write_env_file(env.path, {**env.values, "EXPORTPIPE_STALL_SECONDS": "soon"})
    assert run(env, "status", "exp-st") == 2
    assert "EXPORTPIPE_STALL_SECONDS" in one_line_error(capsys)
