"""``exportpipe local up|down``: a real detached moto server with a deployment's resources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.tools import cli
from exportpipe.tools.envfile import read_env_file
from exportpipe.tools.local import StackOptions, down, read_state, server_answers, up
from exportpipe.tools.processes import process_alive

pytestmark = pytest.mark.slow

_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    down(path)  # never leave a server behind, whatever the test did


def _sqs(env: dict[str, str]) -> Any:
    return boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")


def _redrive(sqs: Any, url: str) -> tuple[int, int, str]:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    return (
        int(attrs["VisibilityTimeout"]),
        int(policy["maxReceiveCount"]),
        policy["deadLetterTargetArn"],
    )


def test_up_creates_the_deployment_resources_and_env_file(state_dir: Path) -> None:
    result = up(state_dir)
    env = read_env_file(state_dir / "local.env")
    assert env == result.values
    assert env["AWS_ENDPOINT_URL"] == result.state.endpoint
    assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    sqs = _sqs(env)
    for name, timing in (
        ("REQUESTS", DEFAULT_DEPLOYMENT.requests_queue),
        ("JOBS", DEFAULT_DEPLOYMENT.jobs_queue),
    ):
        visibility, receives, dlq_arn = _redrive(sqs, env[f"EXPORTPIPE_{name}_QUEUE_URL"])
        assert (visibility, receives) == (
            timing.visibility_timeout_seconds,
            timing.max_receive_count,
        )
        assert dlq_arn.endswith(env[f"EXPORTPIPE_{name}_DLQ_URL"].rsplit("/", 1)[1])
    # Services take their heartbeat/receive defaults from the same deployment.
    assert "EXPORTPIPE_MAX_RECEIVE_COUNT" not in env
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.head_bucket(Bucket=env["EXPORTPIPE_BUCKET"])
    ddb = boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    table = ddb.describe_table(TableName=env["EXPORTPIPE_TABLE"])["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["active"]
    # The completion topic delivers to the events queue.
    sns = boto3.client("sns", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    sns.publish(TopicArn=env["EXPORTPIPE_EVENTS_TOPIC_ARN"], Message='{"hello": 1}')
    got = sqs.receive_message(QueueUrl=env["EXPORTPIPE_EVENTS_QUEUE_URL"], WaitTimeSeconds=2)
    assert [m["Body"] for m in got["Messages"]] == ['{"hello": 1}']
    state = read_state(state_dir)
    assert state is not None
    assert state.pid == result.state.pid
    assert state.is_our_server()
    assert oct((state_dir / "local.env").stat().st_mode & 0o777) == "0o600"


def test_up_is_idempotent_and_applies_overrides(state_dir: Path) -> None:
    first = up(state_dir)
    second = up(state_dir, StackOptions(max_receives=3, visibility_timeout=12))
    assert second.reused
    assert second.state.pid == first.state.pid
    env = read_env_file(state_dir / "local.env")
    sqs = _sqs(env)
    for name in ("REQUESTS", "JOBS"):
        visibility, receives, _ = _redrive(sqs, env[f"EXPORTPIPE_{name}_QUEUE_URL"])
        assert (visibility, receives) == (12, 3)
    assert env["EXPORTPIPE_MAX_RECEIVE_COUNT"] == "3"
    assert env["EXPORTPIPE_VISIBILITY_TIMEOUT_SECONDS"] == "12"
    assert float(env["EXPORTPIPE_HEARTBEAT_SECONDS"]) == 4.0
    # Still exactly one subscription: a second `up` does not double-deliver events.
    sns = boto3.client("sns", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    subs = sns.list_subscriptions_by_topic(TopicArn=env["EXPORTPIPE_EVENTS_TOPIC_ARN"])
    assert len(subs["Subscriptions"]) == 1


def test_up_reuses_a_server_that_holds_an_aborted_multipart_upload(state_dir: Path) -> None:
    """moto's /moto-api/data.json answers 500 once an upload was aborted: not a probe."""
    first = up(state_dir)
    s3 = boto3.client(
        "s3", endpoint_url=first.state.endpoint, region_name="us-east-1", **_CREDENTIALS
    )
    bucket = first.values["EXPORTPIPE_BUCKET"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="exports/x/data/f")["UploadId"]
    s3.upload_part(
        Bucket=bucket, Key="exports/x/data/f", UploadId=upload, PartNumber=1, Body=b"x" * 100
    )
    s3.abort_multipart_upload(Bucket=bucket, Key="exports/x/data/f", UploadId=upload)
    second = up(state_dir)
    assert second.reused
    assert second.state.pid == first.state.pid
    assert server_answers(first.state.endpoint)


def test_down_stops_the_server_and_up_starts_a_new_one_after_a_crash(state_dir: Path) -> None:
    first = up(state_dir)
    os.kill(first.state.pid, signal.SIGKILL)
    second = up(state_dir)
    assert not second.reused
    assert second.state.pid != first.state.pid
    stopped = down(state_dir)
    assert stopped is not None
    assert stopped.pid == second.state.pid
    assert not process_alive(second.state.pid)
    assert not (state_dir / "local.env").exists()
    assert read_state(state_dir) is None
    assert down(state_dir) is None  # nothing left to stop


def test_down_leaves_a_reused_pid_alone(state_dir: Path) -> None:
    """If the recorded pid now belongs to another program, down must not signal it."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_dir.mkdir(parents=True)
        (state_dir / "local.json").write_text(
            json.dumps(
                {
                    "pid": other.pid,
                    "port": 1,
                    "endpoint": "http://127.0.0.1:1",
                    "log_file": "x",
                    "env_file": "y",
                    "started_at": 0,
                }
            )
        )
        assert down(state_dir) is None
        assert other.poll() is None
        assert read_state(state_dir) is None
    finally:
        other.kill()
        other.wait()


def test_cli_local_up_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a project directory, `up` writes .exportpipe/local.env and the CLI finds it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    try:
        assert cli.main(["local", "up", "--no-services", "--max-receives", "2"]) == 0
        out = capsys.readouterr().out
        assert "local stack started" in out
        assert "orchestrator" not in out  # --no-services: the emulated AWS only
        assert not (tmp_path / ".exportpipe" / "services.json").exists()
        assert (tmp_path / ".exportpipe" / "local.env").is_file()
        assert cli.main(["local", "up", "--no-services"]) == 0
        assert "local stack running" in capsys.readouterr().out
        assert cli.main(["dlq", "list"]) == 0  # no --env-file: found in .exportpipe/
        assert "no dead letters" in capsys.readouterr().out
        assert cli.main(["local", "up", "--max-receives", "0"]) == 2
        assert "--max-receives" in capsys.readouterr().err
    finally:
        assert cli.main(["local", "down"]) == 0
    assert "local stack stopped" in capsys.readouterr().out
    assert cli.main(["local", "down"]) == 0
    assert "no local stack running" in capsys.readouterr().out
