"""The worker as a process: SQS 2 → S3 end to end, SIGTERM, and kill -9 then redelivery."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from exportpipe.common.schemas import DownloadJob, encode
from exportpipe.common.sqs import queue_depth
from exportpipe.testing import create_queue_pair

MIB = 1024 * 1024
BIG = b"".join(b'{"id": %d, "pad": "%s"}\n' % (i, b"p" * (i % 64)) for i in range(400_000))


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Worker:
    """One ``python -m exportpipe.worker`` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exportpipe.worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log.read_text()


@pytest.fixture
def queues(sqs: Any) -> tuple[str, str]:
    return create_queue_pair(sqs, f"jobs-{os.urandom(4).hex()}", max_receive_count=5)


@pytest.fixture
def start_worker(
    moto_server: str, bucket: str, queues: tuple[str, str], tmp_path: Path, ecs_agent: Any
) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(**overrides: str) -> Worker:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": moto_server,
            "EXPORTPIPE_BUCKET": bucket,
            "EXPORTPIPE_JOBS_QUEUE_URL": queues[0],
            "EXPORTPIPE_JOBS_DLQ_URL": queues[1],
            "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS": "localhost",
            "EXPORTPIPE_WAIT_TIME_SECONDS": "1",
            "EXPORTPIPE_VISIBILITY_TIMEOUT_SECONDS": "6",
            "EXPORTPIPE_HEARTBEAT_SECONDS": "2",
            "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS": "5",
            "EXPORTPIPE_CONCURRENCY": "2",
            "EXPORTPIPE_PART_SIZE_BYTES": str(5 * MIB),
            "EXPORTPIPE_UPLOAD_PARTS_IN_FLIGHT": "2",
            "EXPORTPIPE_SPOOL_DIR": str(tmp_path),
            "EXPORTPIPE_METRICS_FLUSH_SECONDS": "3600",
            "ECS_AGENT_URI": ecs_agent.uri,
            **overrides,
        }
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found)


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    depth = queue_depth(sqs, url)
    return depth.visible, depth.in_flight


@pytest.mark.e2e
def test_jobs_commit_or_dead_letter_and_sigterm_exits_cleanly(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    queues: tuple[str, str],
    file_server: Any,
    make_job: Any,
    start_worker: Callable[..., Worker],
    ecs_agent: Any,
) -> None:
    good_payload = gzip.compress(BIG[: 2 * MIB])
    good: DownloadJob = make_job(file_server.add(good_payload), body=good_payload)
    bad_payload = gzip.compress(b'{"ok": 1}\n[1]\n')
    bad: DownloadJob = make_job(file_server.add(bad_payload), body=bad_payload, file_id="file-2")
    for job in (good, bad):
        sqs.send_message(QueueUrl=queues[0], MessageBody=encode(job))
    worker = start_worker()
    manifest = f"exports/{good.export_id}/manifests/file-1.json"
    _wait(lambda: manifest in _keys(s3, bucket, "exports/"), 30, "the manifest")
    dead = _wait(
        lambda: sqs.receive_message(
            QueueUrl=queues[1], MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages"),
        30,
        "the dead letter",
    )
    assert dead[0]["MessageAttributes"]["exportpipe-error-reason"]["StringValue"] == "invalid_jsonl"
    assert f"exports/{bad.export_id}/rejected/file-2.json" in _keys(s3, bucket, "exports/")
    _wait(lambda: _queue_counts(sqs, queues[0]) == (0, 0), 15, "the queue to drain")
    # Scale-in protection was taken while busy and given back once idle.
    _wait(
        lambda: ecs_agent.calls and ecs_agent.calls[-1]["ProtectionEnabled"] is False,
        10,
        "protection to be cleared",
    )
    assert ecs_agent.calls[0]["ProtectionEnabled"] is True
    assert worker.stop(signal.SIGTERM) == 0
    assert "secret-token" not in worker.logs()
    assert _uploads(s3, bucket) == []


def _started_upload(s3: Any, bucket: str) -> bool:
    for upload in _uploads(s3, bucket):
        parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        if parts.get("Parts"):
            return True
    return False


def _send_slow_job(
    sqs: Any, queue_url: str, file_server: Any, make_job: Any
) -> tuple[str, DownloadJob]:
    """Queue a job for a large file served at 0.5 MiB/s, so a worker is caught mid-job."""
    payload = gzip.compress(BIG, 1)
    url = file_server.add(payload, bytes_per_second=MIB // 2)
    job: DownloadJob = make_job(url, body=payload)
    sqs.send_message(QueueUrl=queue_url, MessageBody=encode(job))
    return url, job


@pytest.mark.e2e
def test_kill_9_mid_upload_then_redelivery_commits_exactly_once(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    queues: tuple[str, str],
    file_server: Any,
    make_job: Any,
    start_worker: Callable[..., Worker],
) -> None:
    url, job = _send_slow_job(sqs, queues[0], file_server, make_job)
    first = start_worker()
    _wait(lambda: _started_upload(s3, bucket), 40, "a part to be uploaded")
    first.stop(signal.SIGKILL)
    assert _uploads(s3, bucket)  # the killed worker could not clean up
    served = next(f for p, f in file_server.files.items() if p in url)
    served.bytes_per_second = 0
    second = start_worker()  # the message comes back once its visibility runs out
    root = f"exports/{job.export_id}/"
    _wait(lambda: f"{root}manifests/file-1.json" in _keys(s3, bucket, root), 60, "the manifest")
    assert _keys(s3, bucket, root) == [
        f"{root}data/file-1/part-0001.jsonl",
        f"{root}manifests/file-1.json",
    ]
    body = s3.get_object(Bucket=bucket, Key=f"{root}data/file-1/part-0001.jsonl")["Body"].read()
    assert body == BIG
    manifest = orjson.loads(
        s3.get_object(Bucket=bucket, Key=f"{root}manifests/file-1.json")["Body"].read()
    )
    assert manifest["members"][0]["records"] == 400_000
    _wait(lambda: _uploads(s3, bucket) == [], 10, "no open multipart uploads")
    _wait(lambda: _queue_counts(sqs, queues[0]) == (0, 0), 15, "the queue to drain")
    assert _queue_counts(sqs, queues[1]) == (0, 0)
    assert second.stop(signal.SIGTERM) == 0


@pytest.mark.e2e
def test_sigterm_mid_job_releases_and_aborts(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    queues: tuple[str, str],
    file_server: Any,
    make_job: Any,
    start_worker: Callable[..., Worker],
) -> None:
    _, job = _send_slow_job(sqs, queues[0], file_server, make_job)
    worker = start_worker(EXPORTPIPE_SHUTDOWN_GRACE_SECONDS="1")
    _wait(lambda: _started_upload(s3, bucket), 40, "a part to be uploaded")
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20
    assert _uploads(s3, bucket) == []
    assert _keys(s3, bucket, f"exports/{job.export_id}/") == []
    # Released, not deleted: the message is visible again at once.
    assert _queue_counts(sqs, queues[0]) == (1, 0)


@pytest.mark.e2e
def test_worker_drains_at_its_maximum_age_and_exits_on_its_own(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    queues: tuple[str, str],
    file_server: Any,
    make_job: Any,
    start_worker: Callable[..., Worker],
    ecs_agent: Any,
) -> None:
    # Issue 17: a loaded worker must not hold scale-in protection for ever.
    _url, job = _send_slow_job(sqs, queues[0], file_server, make_job)
    worker = start_worker(
        EXPORTPIPE_DRAIN_AFTER_MINUTES="0.05",  # 3 s
        EXPORTPIPE_DRAIN_GRACE_MINUTES="2",
        EXPORTPIPE_CONCURRENCY="1",
    )
    _wait(lambda: ecs_agent.calls, 20, "protection to be taken")
    _wait(lambda: "maximum age" in worker.logs(), 20, "the drain to start")
    # Draining: a job queued now is left for other tasks.
    late = make_job(file_server.add(gzip.compress(b'{"a": 1}\n')), file_id="file-9")
    sqs.send_message(QueueUrl=queues[0], MessageBody=encode(late))
    assert worker.proc.wait(timeout=90) == 0  # finished its job, then exited by itself
    root = f"exports/{job.export_id}/"
    assert f"{root}manifests/file-1.json" in _keys(s3, bucket, root)
    assert "file-9" not in " ".join(_keys(s3, bucket, "exports/"))
    assert _queue_counts(sqs, queues[0]) == (1, 0)
    assert ecs_agent.calls[-1]["ProtectionEnabled"] is False
    assert ecs_agent.calls[0]["ExpiresInMinutes"] <= 3  # capped at the drain deadline


@pytest.mark.e2e
def test_a_job_past_max_job_seconds_is_refused_dead_lettered_and_counted(
    *,
    s3: Any,
    sqs: Any,
    bucket: str,
    queues: tuple[str, str],
    file_server: Any,
    make_job: Any,
    start_worker: Callable[..., Worker],
) -> None:
    """ADR 0005's promise: a deadline is a permanent failure with its reason, not a release."""
    import uuid

    import boto3

    from exportpipe.common.tracking import ExportTracker

    table = f"t-{uuid.uuid4().hex[:8]}"
    tracker = ExportTracker(boto3.client("dynamodb"), table)
    tracker.create_table()
    payload = gzip.compress(BIG, 1)
    job: DownloadJob = make_job(file_server.add(payload, bytes_per_second=MIB // 4), body=payload)
    root = f"exports/{job.export_id}/"
    tracker.record_page(job.export_id, 0, [job.file_id], is_last=True, bucket=bucket, prefix=root)
    sqs.send_message(QueueUrl=queues[0], MessageBody=encode(job))
    worker = start_worker(
        EXPORTPIPE_MAX_JOB_SECONDS="3",
        EXPORTPIPE_HEARTBEAT_SECONDS="1",
        EXPORTPIPE_TABLE=table,
    )
    dead = _wait(
        lambda: sqs.receive_message(
            QueueUrl=queues[1], MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages"),
        40,
        "the dead letter",
    )
    attrs = {k: v["StringValue"] for k, v in dead[0]["MessageAttributes"].items()}
    assert attrs["exportpipe-error-reason"] == "job_deadline_exceeded"
    assert "EXPORTPIPE_MAX_JOB_SECONDS" in attrs["exportpipe-error-message"]
    rejection = orjson.loads(
        s3.get_object(Bucket=bucket, Key=f"{root}rejected/{job.file_id}.json")["Body"].read()
    )
    assert rejection["reason"] == "job_deadline_exceeded"
    state = tracker.get(job.export_id)
    assert state is not None
    assert (state.files_rejected, state.files_outstanding) == (1, 0)
    assert state.status == "completed_with_errors"
    _wait(lambda: _queue_counts(sqs, queues[0]) == (0, 0), 15, "the queue to drain")
    assert _uploads(s3, bucket) == []
    assert worker.stop(signal.SIGTERM) == 0
