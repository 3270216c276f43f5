from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import (
    ArchiveRejected,
    ExportPipeError,
    IntegrityError,
    JobDeadlineExceeded,
    JobReleased,
    MalformedMessage,
    UnsafeSource,
    ValidationFailed,
)
from exportpipe.worker.pipeline import JobResult, Pipeline
from exportpipe.worker.settings import WorkerSettings

MIB = 1024 * 1024


def jsonl(records: int, *, start: int = 0) -> bytes:
    return b"".join(
        b'{"id": %d, "name": "row-%d", "pad": "%s"}\n' % (i, i, b"x" * (i % 50))
        for i in range(start, start + records)
    )


CSV = b"id,name\n" + b"".join(b'%d,"name %d"\n' % (i, i) for i in range(1000))


def _keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _manifest(s3: Any, bucket: str, result: JobResult) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read()
    return dict(orjson.loads(body))


def _tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


BIG = jsonl(150_000)  # ~10 MiB: three 5 MiB parts
SMALL = {"a/one.jsonl": jsonl(100), "two.jsonl": jsonl(50, start=100)}


@pytest.mark.parametrize(
    ("compression", "file_name", "payload", "expected"),
    [
        ("gzip", "part.jsonl.gz", gzip.compress(BIG, 1), {"part.jsonl": BIG}),
        (
            None,
            "part.jsonl.gz",
            gzip.compress(BIG[:5000]) + gzip.compress(BIG[5000:]),
            {"part.jsonl": BIG},
        ),
        ("zstd", "part.jsonl.zst", zstandard.ZstdCompressor().compress(BIG), {"part.jsonl": BIG}),
        ("none", "part.jsonl", BIG, {"part.jsonl": BIG}),
        ("zip", "bundle.zip", _zip(SMALL), SMALL),
        ("tar", "bundle.tar", _tar(SMALL), SMALL),
        ("tar.gz", "bundle.tar.gz", _tar(SMALL, "w:gz"), SMALL),
        (None, "bundle.tgz", _tar(SMALL, "w:gz"), SMALL),
    ],
)
def test_each_compression_lands_members_and_manifest(
    *,
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    compression: str | None,
    file_name: str,
    payload: bytes,
    expected: dict[str, bytes],
) -> None:
    url = file_server.add(payload, name=file_name)
    job = make_job(url, body=payload, file_name=file_name, compression=compression)
    result = Pipeline(settings, s3=s3).run(job)
    assert result.status == "done"
    root = f"exports/{job.export_id}/"
    data_keys = [f"{root}data/file-1/{path}" for path in sorted(expected)]
    assert _keys(s3, bucket, root) == sorted([*data_keys, f"{root}manifests/file-1.json"])
    for path, content in expected.items():
        key = f"{root}data/file-1/{path}"
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == content
    manifest = _manifest(s3, bucket, result)
    assert manifest["source"] == {
        "url": url.split("?")[0],
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    members = {m["path"]: m for m in manifest["members"]}
    for path, content in expected.items():
        assert members[path]["size"] == len(content)
        assert members[path]["sha256"] == hashlib.sha256(content).hexdigest()
        assert members[path]["records"] == content.count(b"\n")
    assert "completed_at" in manifest
    assert _uploads(s3, bucket) == []


def test_a_job_reports_the_time_s3_took_to_assemble_its_objects(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # Multipart: CompleteMultipartUpload is timed (the resume benchmark reads it).
    big = make_job(
        file_server.add(BIG, name="big.jsonl"), body=BIG, file_name="big.jsonl", compression="none"
    )
    assert Pipeline(settings, s3=s3).run(big).complete_seconds > 0
    # One PutObject: nothing to assemble.
    small = jsonl(10)
    job = make_job(
        file_server.add(small, name="s.jsonl"), body=small, file_name="s.jsonl", compression="none"
    )
    assert Pipeline(settings, s3=s3).run(job).complete_seconds == 0


def _aws_cli(*args: str) -> bytes:
    """Run the AWS CLI installed with the project (endpoint and keys from the environment)."""
    aws = Path(sys.executable).with_name("aws")
    done = subprocess.run([str(aws), *args], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_what_lands_reads_back_through_the_aws_cli(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # A client we did not write reads the multipart object, its checksum and its manifest.
    payload = gzip.compress(BIG, 1)
    job = make_job(
        file_server.add(payload, name="big.jsonl.gz"), body=payload, file_name="big.jsonl.gz"
    )
    result = Pipeline(settings, s3=s3).run(job)
    manifest = orjson.loads(_aws_cli("s3", "cp", f"s3://{bucket}/{result.manifest_key}", "-"))
    [member] = manifest["members"]
    body = _aws_cli("s3", "cp", f"s3://{bucket}/{member['key']}", "-")
    assert body == BIG
    assert member["sha256"] == hashlib.sha256(body).hexdigest()
    head = orjson.loads(
        _aws_cli(
            "s3api",
            "head-object",
            "--checksum-mode",
            "ENABLED",
            "--bucket",
            bucket,
            "--key",
            member["key"],
        )
    )
    assert head["ContentLength"] == len(BIG)
    # Written in 5 MiB parts (the test settings) and checked with the worker's CRC32.
    assert head["ETag"].endswith(f'-{-(-len(BIG) // (5 * MIB))}"')
    assert head["ChecksumCRC32"]


@pytest.mark.parametrize(
    ("fmt", "body", "records"), [("csv", CSV, 1000), ("binary", bytes(range(256)) * 100, None)]
)
def test_formats(
    *,
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    fmt: str,
    body: bytes,
    records: int | None,
) -> None:
    payload = gzip.compress(body)
    url = file_server.add(payload)
    job = make_job(url, body=payload, file_name=f"f.{fmt}.gz", fmt=fmt)
    result = Pipeline(settings, s3=s3).run(job)
    (member,) = _manifest(s3, bucket, result)["members"]
    assert member["records"] == records
    assert member["path"] == f"f.{fmt}"


def test_redelivered_job_is_acknowledged_without_work(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(jsonl(10))
    url = file_server.add(payload)
    job = make_job(url, body=payload)
    pipeline = Pipeline(settings, s3=s3)
    assert pipeline.run(job).status == "done"
    assert pipeline.run(job).status == "duplicate"
    assert len(file_server.requests_for(url)) == 1


def test_manifest_for_another_source_is_a_conflict(
    s3: Any, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(jsonl(10))
    url = file_server.add(payload)
    job = make_job(url, body=payload)
    Pipeline(settings, s3=s3).run(job)
    changed = job.model_copy(update={"sha256": "f" * 64})
    with pytest.raises(IntegrityError) as info:
        Pipeline(settings, s3=s3).run(changed)
    assert info.value.reason == "manifest_conflict"


def _assert_rejected(s3: Any, bucket: str, job: Any, reason: str) -> None:
    root = f"exports/{job.export_id}/"
    assert _keys(s3, bucket, root) == [f"{root}rejected/file-1.json"]
    record = orjson.loads(
        s3.get_object(Bucket=bucket, Key=f"{root}rejected/file-1.json")["Body"].read()
    )
    assert record["reason"] == reason
    assert "secret-token" not in orjson.dumps(record).decode()
    assert _uploads(s3, bucket) == []


def test_checksum_mismatch_commits_nothing(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(BIG, 1)
    url = file_server.add(payload)
    job = make_job(url, body=payload, sha256="0" * 64)
    with pytest.raises(IntegrityError):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "sha256_mismatch")


def test_truncated_download_resumes_then_commits(
    s3: Any, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(BIG, 1)
    url = file_server.add(payload, truncate_at=len(payload) // 3)
    result = Pipeline(settings, s3=s3).run(make_job(url, body=payload))
    assert result.status == "done"
    assert [h.get("Range") for h in file_server.requests_for(url)] == [
        None,
        f"bytes={len(payload) // 3}-",
    ]


def test_invalid_content_is_rejected_with_nothing_under_data(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # The bad line comes after several parts were already uploaded.
    payload = gzip.compress(BIG + b"[1, 2, 3]\n", 1)
    url = file_server.add(payload)
    job = make_job(url, body=payload)
    with pytest.raises(ValidationFailed):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "invalid_jsonl")


def test_rejection_aborts_uploads_of_other_attempts(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # An upload this attempt never learnt about: an earlier attempt was killed, or a
    # CreateMultipartUpload response was lost and the retry opened a second one.
    payload = gzip.compress(jsonl(500) + b"[1, 2, 3]\n", 1)
    job = make_job(file_server.add(payload), body=payload)
    key = f"{job.destination.prefix}data/{job.file_id}/orphan.jsonl"
    s3.create_multipart_upload(Bucket=bucket, Key=key)
    with pytest.raises(ValidationFailed):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "invalid_jsonl")  # includes: no open uploads


def test_unsafe_archive_is_rejected(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = _zip({"ok.jsonl": jsonl(5), "../../escape.jsonl": jsonl(5)})
    url = file_server.add(payload)
    job = make_job(url, body=payload, file_name="x.zip", compression="zip")
    with pytest.raises(ArchiveRejected):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "path_escape")


def test_zip_bomb_is_rejected(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = _zip({"bomb.jsonl": b" " * (32 * MIB)})  # about 1000:1
    url = file_server.add(payload)
    job = make_job(url, body=payload, file_name="x.zip", compression="zip")
    with pytest.raises(ArchiveRejected):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "compression_ratio")


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:{port}/x", "http://169.254.169.254/latest/meta-data/"]
)
def test_redirect_to_internal_address_is_rejected(
    *, s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any, target: str
) -> None:
    url = file_server.add(redirect=target.format(port=file_server.port))
    job = make_job(url)
    with pytest.raises(UnsafeSource):
        Pipeline(settings, s3=s3).run(job)
    _assert_rejected(s3, bucket, job, "host_not_allowed")


def test_destination_outside_the_bucket_is_refused(
    s3: Any, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    job = make_job(file_server.add(b"x"))
    foreign = job.model_copy(
        update={"destination": job.destination.model_copy(update={"bucket": "someone-else"})}
    )
    with pytest.raises(MalformedMessage):
        Pipeline(settings, s3=s3).run(foreign)


def test_duplicate_delivery_to_two_workers_at_once(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(BIG, 1)
    # Throttled so that both workers are mid-stream at the same time.
    url = file_server.add(payload, bytes_per_second=4 * MIB)
    job = make_job(url, body=payload)
    results: list[JobResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        try:
            results.append(Pipeline(settings, s3=s3).run(job))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(r.status for r in results) == ["done", "duplicate"]
    root = f"exports/{job.export_id}/"
    assert _keys(s3, bucket, root) == [
        f"{root}data/file-1/part-0001.jsonl",
        f"{root}manifests/file-1.json",
    ]
    assert (
        s3.get_object(Bucket=bucket, Key=f"{root}data/file-1/part-0001.jsonl")["Body"].read() == BIG
    )
    assert _uploads(s3, bucket) == []
    assert len(file_server.requests_for(url)) == 2


def test_cancel_stops_a_stalled_download(
    *, s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(BIG, 1)
    # One 64 KiB write every 3 s: the first 1 MiB read would take ~48 s to return.
    url = file_server.add(payload, bytes_per_second=64 * 1024 // 3)
    job = make_job(url, body=payload)
    cancel = CancelToken()
    threading.Timer(0.5, cancel.cancel, args=(JobReleased("released at shutdown"),)).start()
    started = time.monotonic()
    with pytest.raises(JobReleased):
        Pipeline(settings, s3=s3).run(job, cancel=cancel)
    assert time.monotonic() - started < 10
    assert _uploads(s3, bucket) == []
    assert _keys(s3, bucket, f"exports/{job.export_id}/") == []


def test_s3_sources_only_from_allowed_buckets(
    s3: Any, bucket: str, settings: WorkerSettings, make_job: Any
) -> None:
    body = jsonl(5)
    s3.put_object(Bucket=bucket, Key="vendor/shared.jsonl", Body=body)
    url = f"s3://{bucket}/vendor/shared.jsonl"
    job = make_job(url, body=body, file_name="shared.jsonl", compression="none")
    with pytest.raises(UnsafeSource) as refused:
        Pipeline(settings, s3=s3).run(job)
    assert refused.value.reason == "source_bucket_not_allowed"
    assert any(k.endswith("/rejected/file-1.json") for k in _keys(s3, bucket, "exports/"))

    allowed = settings.model_copy(update={"source_buckets": frozenset({bucket})})
    result = Pipeline(allowed, s3=s3).run(job)
    assert result.status == "done"
    assert _manifest(s3, bucket, result)["members"][0]["records"] == 5


def test_destination_outside_the_output_prefix_is_refused(
    s3: Any, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    from exportpipe.common.schemas import S3Destination

    payload = gzip.compress(jsonl(1))
    job = make_job(file_server.add(payload), body=payload)
    elsewhere = job.model_copy(
        update={"destination": S3Destination(bucket=settings.bucket, prefix="other/e/")}
    )
    with pytest.raises(MalformedMessage, match="outside the output prefix"):
        Pipeline(settings, s3=s3).run(elsewhere)


def test_zip_over_the_spool_limit_is_refused(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big.csv", CSV * 3000)  # ~40 MB stored: over a 2 MiB spool limit
    payload = buf.getvalue()
    small = settings.model_copy(update={"max_spool_bytes": 2 * MIB})
    job = make_job(
        file_server.add(payload), body=payload, file_name="a.zip", compression="zip", fmt="csv"
    )
    with pytest.raises(ArchiveRejected) as refused:
        Pipeline(small, s3=s3).run(job)
    assert refused.value.reason == "spool_too_large"
    assert not _uploads(s3, bucket)


def _operations(s3: Any) -> list[str]:
    """The S3 operations the client sends from now on, in order."""
    sent: list[str] = []

    def on_send(event_name: str, **_: Any) -> None:
        sent.append(event_name.rsplit(".", 1)[-1])

    s3.meta.events.register("before-send.s3.*", on_send)
    return sent


def test_first_delivery_of_a_small_file_is_two_puts_and_no_housekeeping(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    sent = _operations(s3)
    result = Pipeline(settings, s3=s3).run(job, redelivered=False)
    assert result.status == "done"
    # The member and the manifest: nothing else (the manifest read is skipped for a
    # first delivery that fits one part; its commits find a duplicate, ADR 0015).
    assert sent == ["PutObject", "PutObject"]
    data_key = f"exports/{job.export_id}/data/file-1/part-0001.jsonl"
    assert s3.get_object(Bucket=bucket, Key=data_key)["Body"].read() == jsonl(20)


def test_first_delivery_without_a_listed_size_reads_the_manifest_first(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # Only a file known to fit one part skips the read: a duplicate of a large or
    # unknown-size file would download and upload it all again.
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload).model_copy(update={"size_bytes": None})
    sent = _operations(s3)
    assert Pipeline(settings, s3=s3).run(job, redelivered=False).status == "done"
    assert sent == ["GetObject", "PutObject", "PutObject"]


def _object_state(s3: Any, bucket: str, key: str) -> tuple[bytes, str, Any]:
    head = s3.head_object(Bucket=bucket, Key=key)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body, head["ETag"], head["LastModified"]


def test_first_delivery_of_a_committed_small_file_is_a_duplicate(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    """A re-sent job (a re-run page) meets its own commit: acknowledged, nothing rewritten."""
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    pipeline = Pipeline(settings, s3=s3)
    first = pipeline.run(job, redelivered=False)
    assert first.status == "done"
    root = f"exports/{job.export_id}/"
    data_key = f"{root}data/file-1/part-0001.jsonl"
    before = {k: _object_state(s3, bucket, k) for k in (data_key, first.manifest_key)}
    again = pipeline.run(job, redelivered=False)
    assert again.status == "duplicate"
    assert again.manifest_key == first.manifest_key
    assert {k: _object_state(s3, bucket, k) for k in before} == before
    assert _keys(s3, bucket, root) == sorted(before)
    assert _uploads(s3, bucket) == []


def test_first_delivery_never_replaces_an_object_of_a_committed_file(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    """Without the manifest read, an old object at the key may be a committed file's:
    it is left alone, and the job ends as the read would have ended it."""
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    first = Pipeline(settings, s3=s3).run(job, redelivered=False)
    root = f"exports/{job.export_id}/"
    data_key = f"{root}data/file-1/part-0001.jsonl"
    before = {k: _object_state(s3, bucket, k) for k in (data_key, first.manifest_key)}
    # The same file id listed again with other content; every object counts as stale.
    changed = gzip.compress(jsonl(20, start=100))
    relisted = make_job(
        file_server.add(changed), body=changed, export_id=job.export_id, file_id="file-1"
    )
    stale = settings.model_copy(update={"stale_commit_seconds": 0.0})
    with pytest.raises(IntegrityError) as info:
        Pipeline(stale, s3=s3).run(relisted, redelivered=False)
    assert info.value.reason == "manifest_conflict"
    assert {k: _object_state(s3, bucket, k) for k in before} == before
    assert _keys(s3, bucket, root) == sorted(before)  # no rejection record either
    assert _uploads(s3, bucket) == []


def _leftovers(s3: Any, bucket: str, job: Any) -> tuple[str, str]:
    """An upload and a rejection record that an earlier attempt left behind."""
    root = f"exports/{job.export_id}/"
    s3.create_multipart_upload(Bucket=bucket, Key=f"{root}data/file-1/orphan.jsonl")
    rejected = f"{root}rejected/file-1.json"
    s3.put_object(Bucket=bucket, Key=rejected, Body=b"{}")
    return root, rejected


def test_redelivery_clears_what_an_earlier_attempt_left(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    root, rejected = _leftovers(s3, bucket, job)
    assert Pipeline(settings, s3=s3).run(job, redelivered=True).status == "done"
    assert _uploads(s3, bucket) == []
    assert rejected not in _keys(s3, bucket, root)


def test_first_delivery_leaves_housekeeping_alone(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    """Without a reason to expect leftovers, no request looks for them."""
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    root, rejected = _leftovers(s3, bucket, job)
    sent = _operations(s3)
    assert Pipeline(settings, s3=s3).run(job, redelivered=False).status == "done"
    assert "ListMultipartUploads" not in sent
    assert "DeleteObject" not in sent
    assert rejected in _keys(s3, bucket, root)


def test_a_commit_that_finds_another_attempts_object_runs_housekeeping(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    """A first delivery that meets an identical object knows another attempt ran."""
    payload = gzip.compress(jsonl(20))
    job = make_job(file_server.add(payload), body=payload)
    root, rejected = _leftovers(s3, bucket, job)
    s3.put_object(Bucket=bucket, Key=f"{root}data/file-1/part-0001.jsonl", Body=jsonl(20))
    assert Pipeline(settings, s3=s3).run(job, redelivered=False).status == "done"
    assert _uploads(s3, bucket) == []
    assert rejected not in _keys(s3, bucket, root)


def test_first_delivery_refused_without_multipart_does_not_list_uploads(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    payload = gzip.compress(jsonl(20) + b"[1, 2, 3]\n")
    job = make_job(file_server.add(payload), body=payload)
    sent = _operations(s3)
    with pytest.raises(ValidationFailed):
        Pipeline(settings, s3=s3).run(job, redelivered=False)
    assert "ListMultipartUploads" not in sent
    _assert_rejected(s3, bucket, job, "invalid_jsonl")


def test_a_job_cannot_write_into_another_exports_folder(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    from exportpipe.common.schemas import S3Destination

    payload = gzip.compress(jsonl(1))
    job = make_job(file_server.add(payload), body=payload, export_id="exp-a")
    into_b = job.model_copy(
        update={"destination": S3Destination(bucket=settings.bucket, prefix="exports/exp-b/")}
    )
    with pytest.raises(MalformedMessage) as info:
        Pipeline(settings, s3=s3).run(into_b)
    assert info.value.reason == "destination_not_export_folder"
    assert _keys(s3, bucket, "exports/exp-b/") == []


def test_a_member_key_over_s3_limit_is_refused_before_any_upload(
    s3: Any, bucket: str, settings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # A path the extractor accepts (under 900 bytes) under the longest export id the
    # schema allows: together past S3's 1,024-byte key limit.
    long_name = "/".join(["d" * 220] * 4) + "/rows.jsonl"  # 894 bytes
    payload = _tar({"short.jsonl": jsonl(2), long_name: jsonl(2)})
    job = make_job(
        file_server.add(payload),
        body=payload,
        file_name="x.tar",
        compression="tar",
        export_id="e" * 128,
    )
    with pytest.raises(ArchiveRejected) as info:
        Pipeline(settings, s3=s3).run(job)
    assert info.value.reason == "key_too_long"
    root = f"exports/{job.export_id}/"
    assert _keys(s3, bucket, root) == [f"{root}rejected/file-1.json"]
    assert _uploads(s3, bucket) == []


def _stalling_server(payload: bytes) -> Any:
    """200 with the whole length promised, 64 KiB sent, connection cut; every resume
    then gets a ``206`` with the right ``Content-Range`` and an empty body."""

    def respond(handler: Any) -> None:
        asked = handler.headers.get("Range")
        if asked is None:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(payload)))
            handler.send_header("ETag", '"v1"')
            handler.end_headers()
            handler.wfile.write(payload[: 64 * 1024])
        else:
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            handler.send_header("Content-Length", "0")
            handler.send_header("ETag", '"v1"')
            handler.end_headers()
        handler.close_connection = True

    return respond


def _job_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name != "hostile-server"}


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (JobReleased("released at shutdown"), JobReleased),
        (JobDeadlineExceeded("ran 1 s, past the 1 s limit"), JobDeadlineExceeded),
    ],
    ids=["shutdown", "deadline"],
)
def test_a_cancelled_job_stops_with_its_reason_and_leaves_no_thread(
    *,
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    hostile_server: Any,
    make_job: Any,
    reason: ExportPipeError,
    error: type[ExportPipeError],
) -> None:
    payload = gzip.compress(jsonl(200_000), 1)
    server = hostile_server(_stalling_server(payload))
    job = make_job(server.url, body=payload)
    pipeline = Pipeline(settings, s3=s3)
    baseline = _job_threads()
    token = CancelToken()
    # Lands while the download backs off between two resumes that brought nothing.
    timer = threading.Timer(0.8, token.cancel, args=(reason,))
    timer.start()
    started = time.monotonic()
    with pytest.raises(error):
        pipeline.run(job, cancel=token)
    assert time.monotonic() - started < 10
    timer.join()
    # Back to the baseline: no download, upload or hash thread outlives its job. (Threads
    # of earlier tests may end meanwhile; none may be added.)
    assert _job_threads() - baseline == set()
    assert _uploads(s3, bucket) == []
    root = f"exports/{job.export_id}/"
    if error is JobDeadlineExceeded:
        # Permanent, with its reason on record; a release records nothing.
        rejection = orjson.loads(
            s3.get_object(Bucket=bucket, Key=f"{root}rejected/file-1.json")["Body"].read()
        )
        assert rejection["reason"] == "job_deadline_exceeded"
    else:
        assert _keys(s3, bucket, root) == []
