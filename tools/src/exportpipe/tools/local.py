"""The local stack: a moto server with the queues, bucket, table and topic of a deployment.

``exportpipe local up`` (docs/operations.md, *The local stack*, lists every resource,
setting and file) starts :mod:`exportpipe.testing.motoserver` detached on a free
loopback port, creates on it what the CDK shared stack creates in AWS, with the queue
timing of :data:`~exportpipe.common.sizing.DEFAULT_DEPLOYMENT` unless overridden, and
writes ``local.env`` and ``local.json``. ``up`` is idempotent; ``down`` stops only the
process ``up`` started, after checking the pid still is that moto server.

This module is the emulated AWS only (``--no-services``); the simulator, orchestrator
and workers that ``local up`` starts by default are :mod:`exportpipe.tools.local_services`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, QueueTiming
from exportpipe.common.tracking import ExportTracker
from exportpipe.testing import free_port
from exportpipe.testing.moto import SERVER_MODULE  # DynamoDB serialized
from exportpipe.tools.envfile import ENV_FILE_NAME, write_env_file
from exportpipe.tools.errors import CliError
from exportpipe.tools.local_services import stop_services
from exportpipe.tools.processes import process_alive, process_command, spawn_detached, stop_pids

__all__ = [
    "LOCAL_NAMES",
    "LocalState",
    "StackOptions",
    "UpResult",
    "down",
    "read_state",
    "server_answers",
    "up",
]

STATE_FILE_NAME = "local.json"

REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
LOCAL_NAMES = {
    "requests": "exportpipe-requests",
    "jobs": "exportpipe-jobs",
    "events": "exportpipe-events",
    "bucket": "exportpipe-local",
    "table": "exportpipe-exports",
    "topic": "exportpipe-export-completed",
}


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """Overrides of the deployment's queue timing (``None``: the deployment's value).

    Attributes:
        max_receives: maxReceiveCount of both redrive policies.
        visibility_timeout: both queues' visibility timeout; the services' heartbeat is
            set to a third of it.
    """

    max_receives: int | None = None
    visibility_timeout: int | None = None

    def __post_init__(self) -> None:
        if self.max_receives is not None and not 1 <= self.max_receives <= 1000:
            raise CliError("--max-receives must be between 1 and 1000")
        if self.visibility_timeout is not None and not 3 <= self.visibility_timeout <= 43200:
            raise CliError("--visibility-timeout must be between 3 and 43200 seconds")


@dataclass(frozen=True, kw_only=True)
class LocalState:
    """What ``up`` recorded in ``local.json``."""

    pid: int
    port: int
    endpoint: str
    log_file: str
    env_file: str
    started_at: float

    def is_our_server(self) -> bool:
        """True if ``pid`` is alive and still is the moto server ``up`` started."""
        if not process_alive(self.pid):
            return False
        command = process_command(self.pid)
        if command is not None:
            return SERVER_MODULE in command and str(self.port) in command
        # Cannot read its command line: trust it only if moto answers on its port.
        return server_answers(self.endpoint)


@dataclass(frozen=True)
class UpResult:
    """What ``up`` did."""

    state: LocalState
    env_file: Path
    values: dict[str, str]
    reused: bool


def read_state(state_dir: Path) -> LocalState | None:
    """The recorded state in ``state_dir``, or ``None`` if there is none (or unreadable)."""
    try:
        raw = json.loads((state_dir / STATE_FILE_NAME).read_text())
        return LocalState(**raw)
    except (OSError, ValueError, TypeError):
        return None


_PROBE_PATH = "/moto-api/config"


def server_answers(endpoint: str, timeout: float = 1.0) -> bool:
    """True if a moto server answers at ``endpoint``.

    The probe reads moto's small, state-free config document. ``/moto-api/data.json``
    serializes every backend and answers 500 once the server holds an aborted
    multipart upload, which made a stack that had served exports look dead.
    """
    try:
        with urllib.request.urlopen(f"{endpoint}{_PROBE_PATH}", timeout=timeout) as reply:  # noqa: S310
            return bool(200 <= reply.status < 300 and b"{" in reply.read(4096))
    except OSError:
        return False


def _client(service: str, endpoint: str) -> Any:
    return boto3.session.Session(  # type: ignore[call-overload]
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    ).client(service, endpoint_url=endpoint)


def _start_server(state_dir: Path, timeout: float) -> LocalState:
    log_file = state_dir / "moto.log"
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    last_error = "no attempt"
    for _ in range(3):  # the free port may be taken between choosing and binding it
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", SERVER_MODULE, "-H", "127.0.0.1", "-p", str(port)]
        try:
            pid = spawn_detached(argv, log_file=log_file, env=env, cwd=state_dir)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process_alive(pid):
                last_error = f"moto server exited at start (see {log_file})"
                break
            if server_answers(endpoint):
                return LocalState(
                    pid=pid,
                    port=port,
                    endpoint=endpoint,
                    log_file=str(log_file),
                    env_file=str(state_dir / ENV_FILE_NAME),
                    started_at=time.time(),
                )
            time.sleep(0.1)
        else:
            stop_pids([pid], grace=2)
            last_error = f"moto server did not answer on {endpoint} in {timeout:.0f} s"
    raise CliError(f"cannot start the local stack: {last_error}")


def _ensure_queue(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError:
        return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def _queue_arn(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def _ensure_queue_pair(
    sqs: Any, name: str, timing: QueueTiming, options: StackOptions
) -> tuple[str, str]:
    dlq_url = _ensure_queue(
        sqs,
        f"{name}-dlq",
        {"MessageRetentionPeriod": str(min(timing.dlq_retention_days * 86400, 1_209_600))},
    )
    url = _ensure_queue(
        sqs,
        name,
        {
            "VisibilityTimeout": str(
                options.visibility_timeout or timing.visibility_timeout_seconds
            ),
            "MessageRetentionPeriod": str(timing.retention_days * 86400),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": _queue_arn(sqs, dlq_url),
                    "maxReceiveCount": str(options.max_receives or timing.max_receive_count),
                }
            ),
        },
    )
    return url, dlq_url


def _ensure_resources(endpoint: str, options: StackOptions) -> dict[str, str]:
    sqs = _client("sqs", endpoint)
    s3 = _client("s3", endpoint)
    sns = _client("sns", endpoint)
    dynamodb = _client("dynamodb", endpoint)
    requests_url, requests_dlq = _ensure_queue_pair(
        sqs, LOCAL_NAMES["requests"], DEFAULT_DEPLOYMENT.requests_queue, options
    )
    jobs_url, jobs_dlq = _ensure_queue_pair(
        sqs, LOCAL_NAMES["jobs"], DEFAULT_DEPLOYMENT.jobs_queue, options
    )
    s3.create_bucket(Bucket=LOCAL_NAMES["bucket"])  # idempotent in us-east-1
    try:
        ExportTracker(dynamodb, LOCAL_NAMES["table"]).create_table()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
    topic_arn = str(sns.create_topic(Name=LOCAL_NAMES["topic"])["TopicArn"])
    events_url = _ensure_queue(sqs, LOCAL_NAMES["events"], {})
    events_arn = _queue_arn(sqs, events_url)
    subscribed = sns.list_subscriptions_by_topic(TopicArn=topic_arn).get("Subscriptions", [])
    if not any(sub.get("Endpoint") == events_arn for sub in subscribed):
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=events_arn,
            Attributes={"RawMessageDelivery": "true"},
        )
    values = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        **FAKE_CREDENTIALS,
        "EXPORTPIPE_REQUESTS_QUEUE_URL": requests_url,
        "EXPORTPIPE_REQUESTS_DLQ_URL": requests_dlq,
        "EXPORTPIPE_JOBS_QUEUE_URL": jobs_url,
        "EXPORTPIPE_JOBS_DLQ_URL": jobs_dlq,
        "EXPORTPIPE_BUCKET": LOCAL_NAMES["bucket"],
        "EXPORTPIPE_TABLE": LOCAL_NAMES["table"],
        "EXPORTPIPE_EVENTS_TOPIC_ARN": topic_arn,
        "EXPORTPIPE_EVENTS_QUEUE_URL": events_url,
    }
    # The services' consumers must heartbeat and count receives like the queues do.
    if options.visibility_timeout is not None:
        values["EXPORTPIPE_VISIBILITY_TIMEOUT_SECONDS"] = str(options.visibility_timeout)
        values["EXPORTPIPE_HEARTBEAT_SECONDS"] = f"{options.visibility_timeout / 3:.1f}"
    if options.max_receives is not None:
        values["EXPORTPIPE_MAX_RECEIVE_COUNT"] = str(options.max_receives)
    return values


def up(state_dir: Path, options: StackOptions | None = None, *, timeout: float = 30.0) -> UpResult:
    """Start (or reuse) the local stack in ``state_dir`` and write its env file.

    Raises:
        CliError: the server could not be started or set up.
    """
    options = options or StackOptions()
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(state_dir)
    reused = state is not None and state.is_our_server() and server_answers(state.endpoint)
    if state is None or not reused:
        # Services recorded against a server that is gone would talk to nothing.
        stop_services(state_dir)
        state = _start_server(state_dir, timeout)
        (state_dir / STATE_FILE_NAME).write_text(json.dumps(asdict(state), indent=2) + "\n")
    try:
        values = _ensure_resources(state.endpoint, options)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        raise CliError(f"cannot create the local resources on {state.endpoint}: {code}") from None
    env_file = state_dir / ENV_FILE_NAME
    write_env_file(
        env_file,
        values,
        header=(
            "Local exportpipe stack, written by `exportpipe local up`.\n"
            f"moto server pid {state.pid} on {state.endpoint}; stop it with "
            "`exportpipe local down`."
        ),
    )
    return UpResult(state=state, env_file=env_file, values=values, reused=reused)


def down(state_dir: Path) -> LocalState | None:
    """Stop the services and the moto server ``up`` started in ``state_dir``.

    The services (see :mod:`exportpipe.tools.local_services`) stop first; then the
    server, and its state files are removed.

    Returns:
        The state of the stack that was stopped, or ``None`` when none was running.
        A recorded pid that now belongs to another process is left alone.
    """
    state_dir = state_dir.resolve()
    stop_services(state_dir)  # before the server they talk to
    state = read_state(state_dir)
    if state is None:
        return None
    stopped = state.is_our_server() and bool(stop_pids([state.pid]))
    for name in (STATE_FILE_NAME, ENV_FILE_NAME):
        (state_dir / name).unlink(missing_ok=True)
    return state if stopped else None
