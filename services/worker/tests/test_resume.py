"""Resumable jobs (ADR 0020): checkpoints at part boundaries, ranged resume, part reuse."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
import pytest
import zstandard

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import JobReleased
from exportpipe.worker.checkpoint import Checkpoint, CheckpointStore, checkpoint_key
from exportpipe.worker.pipeline import JobResult, Pipeline
from exportpipe.worker.resume import ResumeDiscarded
from exportpipe.worker.settings import WorkerSettings
from exportpipe.worker.upload import CommitConflict

MIB = 1024 * 1024
PART = 5 * MIB


def jsonl(records: int) -> bytes:
    return b"".join(b'{"id": %d, "pad": "%s"}\n' % (i, b"y" * (i % 97)) for i in range(records))


BODY = jsonl(330_000)  # ~22 MiB: four whole 5 MiB parts and a short fifth


@pytest.fixture
def rsettings(settings: WorkerSettings) -> WorkerSettings:
    # Checkpoint at every part boundary so the tests can release at a known point.
    return settings.model_copy(update={"checkpoint_seconds": 0.0})


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _path(file_server: Any, url: str) -> str:
    return str(url.split(f":{file_server.port}", 1)[1].split("?", maxsplit=1)[0])


def _checkpoint(s3: Any, bucket: str, job: Any) -> Checkpoint | None:
    key = checkpoint_key(job.destination.prefix, job.file_id)
    return CheckpointStore(s3, bucket).read(key)


@contextmanager
def _part_uploads(s3: Any, *, keyed: bool = False) -> Iterator[list[Any]]:
    """Part numbers (``keyed``: (key, part number)) of every UploadPart call made
    through ``s3`` meanwhile."""
    numbers: list[Any] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        number = int(params["PartNumber"])
        numbers.append((str(params["Key"]), number) if keyed else number)

    s3.meta.events.register("provide-client-params.s3.UploadPart", count)
    try:
        yield numbers
    finally:
        s3.meta.events.unregister("provide-client-params.s3.UploadPart", count)


def _release_after(
    s3: Any,
    bucket: str,
    job: Any,
    settings: WorkerSettings,
    *,
    parts: int = 0,
    until: Any = None,
) -> Checkpoint:
    """Run ``job`` and release it as soon as it writes a checkpoint naming ``parts`` parts
    (or one for which ``until(checkpoint)`` is true).

    The release happens inside the checkpoint's PutObject call (a botocore event on the
    client the pipeline uses), not from a thread polling S3: a poller could see the
    checkpoint only after a throttled download had already finished (it did, on a loaded
    machine), and the job would complete instead of being released.
    """
    cancel = CancelToken()
    key = checkpoint_key(job.destination.prefix, job.file_id)

    def due(cp: Checkpoint) -> bool:
        if until is not None:
            return bool(until(cp))
        return bool(cp.members) and len(cp.members[0].parts) >= parts

    def watch(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == key and due(msgspec.json.decode(params["Body"], type=Checkpoint)):
            cancel.cancel(JobReleased("released"))

    s3.meta.events.register("provide-client-params.s3.PutObject", watch)
    try:
        with pytest.raises(JobReleased):
            Pipeline(settings, s3=s3).run(job, cancel=cancel)
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", watch)
    cp = _checkpoint(s3, bucket, job)
    assert cp is not None
    assert len(cp.members[0].parts) >= parts
    return cp


def _assert_settled(s3: Any, bucket: str, job: Any, result: JobResult, body: bytes) -> None:
    root = job.destination.prefix
    key = f"{root}data/{job.file_id}/{result.members[0].path}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read())
    assert manifest["members"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None
    assert not any("checkpoints/" in k for k in _keys(s3, bucket, root))


def _serve_changed_and_restart(  # noqa: PLR0917 - one scenario's parts
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    file_server: Any,
    job: Any,
    url: str,
    body: bytes,
    payload: bytes,
) -> None:
    """Serve ``payload`` (decoding to ``body``) at ``url`` from now on: the resumed
    attempt must discard its checkpoint and fail retryably, the next one start clean."""
    path = _path(file_server, url)
    file_server.files[path] = type(file_server.files[path])(body=payload)
    with pytest.raises(ResumeDiscarded):
        Pipeline(settings, s3=s3).run(job)
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None
    result = Pipeline(settings, s3=s3).run(job)
    _assert_settled(s3, bucket, job, result, body)


def _assert_starts_clean(s3: Any, bucket: str, settings: WorkerSettings, job: Any) -> None:
    """The next attempt of ``job`` reuses nothing: it reads and uploads the whole file."""
    with _part_uploads(s3) as uploaded:
        result = Pipeline(settings, s3=s3).run(job)
    assert result.resumed_from == 0
    assert result.parts_reused == 0
    assert sorted(uploaded) == [1, 2, 3, 4, 5]
    _assert_settled(s3, bucket, job, result, BODY)


def _assert_resumes_by_range(  # noqa: PLR0917 - one scenario's parts
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    file_server: Any,
    job: Any,
    url: str,
    cp: Checkpoint,
    payload: bytes,
) -> None:
    """The next attempt continues ``cp`` by range and commits BODY byte for byte."""
    assert cp.resume is not None
    before = len(file_server.requests_for(url))
    with _part_uploads(s3) as uploaded:
        result = Pipeline(settings, s3=s3).run(job)
    assert result.status == "done"
    assert result.resumed_from == cp.resume.offset > 0
    # Only the rest of the file was asked for, conditional on the same version.
    (request,) = file_server.requests_for(url)[before:]
    assert request["Range"] == f"bytes={cp.resume.offset}-"
    assert request["If-Range"] == file_server.files[_path(file_server, url)].etag
    assert min(uploaded) == cp.resume.part + 1
    # Byte-identical output with its sha256 (checked here), and the manifest's source
    # digest covers the whole file, not just the resumed tail.
    _assert_settled(s3, bucket, job, result, BODY)
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read())
    assert manifest["source"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert manifest["members"][0]["records"] == 330_000


def test_released_uncompressed_job_resumes_with_range(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    # The release kept the work: the upload is open and the checkpoint owns it.
    assert [u["UploadId"] for u in _uploads(s3, bucket)] == [cp.members[0].upload_id]
    assert cp.resume is not None
    assert cp.resume.offset == cp.resume.part * PART
    # Tagged for the bucket's rule that expires a checkpoint nobody deleted.
    tags = s3.get_object_tagging(
        Bucket=bucket, Key=checkpoint_key(job.destination.prefix, job.file_id)
    )["TagSet"]
    assert tags == [{"Key": "exportpipe-object", "Value": "checkpoint"}]
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    _assert_resumes_by_range(s3, bucket, rsettings, file_server, job, url, cp, BODY)


def test_resume_validates_across_the_boundary(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # A bad line after the resume point must still be found, with its line number
    # (the validator's counters and carried-over partial line are restored).
    bad = bytearray(BODY)
    at = BODY.index(b"\n", 3 * PART + 10) + 1
    bad[at] = ord("[")
    body = bytes(bad)
    line = BODY[:at].count(b"\n") + 1
    url = file_server.add(body, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=body, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    assert cp.resume is not None
    assert cp.resume.offset <= 3 * PART
    from exportpipe.common.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match=f"line {line}:"):
        Pipeline(rsettings, s3=s3).run(job)
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None


@pytest.mark.parametrize(
    ("compression", "name", "encode"),
    [
        ("gzip", "part.jsonl.gz", lambda b: gzip.compress(b, 1)),
        ("zstd", "part.jsonl.zst", lambda b: zstandard.ZstdCompressor(level=1).compress(b)),
    ],
)
def test_compressed_resume_reuploads_no_checkpointed_part(
    *,
    s3: Any,
    bucket: str,
    rsettings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    compression: str,
    name: str,
    encode: Any,
) -> None:
    payload = encode(BODY)
    url = file_server.add(payload, name=name, bytes_per_second=len(payload) // 12)
    job = make_job(url, body=payload, file_name=name, compression=compression)
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    assert cp.resume is None  # compressed: no ranged resume point
    kept = {p.number for p in cp.members[0].parts}
    # The throttle only had to hold the first run until its release.
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    with _part_uploads(s3) as uploaded:
        result = Pipeline(rsettings, s3=s3).run(job)
    assert result.status == "done"
    assert result.parts_reused == len(kept)
    assert kept.isdisjoint(uploaded)
    assert sorted(uploaded) == [n for n in range(1, 6) if n not in kept]
    _assert_settled(s3, bucket, job, result, BODY)


def test_multi_frame_zstd_resumes_at_a_frame_start(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # Frames of ~1 MiB, each with its content size (as pzstd or a seekable writer do).
    step = 1_000_003
    payload = b"".join(
        zstandard.ZstdCompressor(level=1).compress(BODY[i : i + step])
        for i in range(0, len(BODY), step)
    )
    url = file_server.add(payload, name="part.jsonl.zst", bytes_per_second=len(payload) // 12)
    job = make_job(url, body=payload, file_name="part.jsonl.zst", compression="zstd")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    assert cp.resume is not None
    assert cp.resume.frame_output is not None
    # The frame holding the end of the last whole part, at most one frame back.
    assert cp.resume.frame_output <= cp.resume.part * PART < cp.resume.frame_output + step
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    _assert_resumes_by_range(s3, bucket, rsettings, file_server, job, url, cp, payload)


def _gzip_members(body: bytes, step: int) -> bytes:
    """``body`` as concatenated gzip members of ``step`` bytes each, by the gzip binary
    (``cat a.gz b.gz`` is how most multi-member files come to be)."""
    return b"".join(
        subprocess.run(
            ["gzip", "-1", "-c", "-n"], input=body[i : i + step], capture_output=True, check=True
        ).stdout
        for i in range(0, len(body), step)
    )


GZIP_STEP = 1_000_003
GZIP_BODY = _gzip_members(BODY, GZIP_STEP)


def _released_gzip(
    s3: Any,
    bucket: str,
    settings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    **job_args: Any,
) -> tuple[Any, str, Checkpoint]:
    """A multi-member gzip job released after two parts: (job, url, its checkpoint).

    The file is served at full speed afterwards.
    """
    payload = GZIP_BODY
    url = file_server.add(payload, name="part.jsonl.gz", bytes_per_second=len(payload) // 12)
    job = make_job(url, file_name="part.jsonl.gz", **{"body": payload, **job_args})
    cp = _release_after(s3, bucket, job, settings, parts=2)
    assert cp.resume is not None
    assert cp.resume.frame_output is not None
    assert cp.source.compression == "gzip"
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    return job, url, cp


def _forge(s3: Any, bucket: str, job: Any, cp: Checkpoint, point: str, **changes: Any) -> None:
    """Store ``cp`` again with its ``point`` (``resume`` or ``archive``) changed."""
    import msgspec

    original = getattr(cp, point)
    assert original is not None
    wrong = msgspec.structs.replace(original, **changes)
    CheckpointStore(s3, bucket).write(
        checkpoint_key(job.destination.prefix, job.file_id),
        msgspec.structs.replace(cp, **{point: wrong}),
    )


def test_multi_member_gzip_resumes_at_a_member_start(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    job, url, cp = _released_gzip(s3, bucket, rsettings, file_server, make_job, compression="gzip")
    assert cp.resume is not None
    assert cp.resume.frame_output is not None
    # The member holding the end of the last whole part, at most one member back, and
    # the source offset is that member's first byte.
    assert cp.resume.frame_output <= cp.resume.part * PART < cp.resume.frame_output + GZIP_STEP
    assert cp.resume.frame_output % GZIP_STEP == 0
    assert GZIP_BODY[cp.resume.offset : cp.resume.offset + 2] == b"\x1f\x8b"
    assert gzip.decompress(GZIP_BODY[cp.resume.offset :]) == BODY[cp.resume.frame_output :]
    _assert_resumes_by_range(s3, bucket, rsettings, file_server, job, url, cp, GZIP_BODY)


def test_undeclared_multi_member_gzip_also_resumes_at_a_member_start(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    job, _url, cp = _released_gzip(s3, bucket, rsettings, file_server, make_job, compression=None)
    assert cp.resume is not None
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == cp.resume.offset > 0
    _assert_settled(s3, bucket, job, result, BODY)


def test_multi_member_gzip_whose_source_changed_restarts_clean(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    # No sha256/size in the job: only the server's ETag tells versions apart.
    job, url, _cp = _released_gzip(
        s3, bucket, rsettings, file_server, make_job, compression="gzip", body=None
    )
    changed = jsonl(340_000)
    _serve_changed_and_restart(
        s3, bucket, rsettings, file_server, job, url, changed, _gzip_members(changed, GZIP_STEP)
    )


TAR_NAMES = ("a.jsonl", "b.jsonl", "c.jsonl")


def _plain_tar(tmp_path: Any) -> tuple[bytes, dict[str, bytes]]:
    """Three ~7 MiB JSONL members (two parts each), archived by the tar binary."""
    bodies = {name: jsonl(100_000 + 1000 * i) for i, name in enumerate(TAR_NAMES)}
    for name, body in bodies.items():
        (tmp_path / name).write_bytes(body)
    tar = subprocess.run(
        ["tar", "-cf", "-", "-C", str(tmp_path), *TAR_NAMES], capture_output=True, check=True
    ).stdout
    return tar, bodies


def _released_tar(
    s3: Any,
    bucket: str,
    *,
    settings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    tmp_path: Any,
    **job_args: Any,
) -> tuple[Any, str, Checkpoint, bytes, dict[str, bytes]]:
    """A plain tar job released once an entry after a whole member is checkpointed."""
    tar, bodies = _plain_tar(tmp_path)
    url = file_server.add(tar, name="part.tar", bytes_per_second=len(tar) // 10)
    job = make_job(url, file_name="part.tar", **{"body": tar, "compression": "tar", **job_args})
    cp = _release_after(
        s3, bucket, job, settings, until=lambda c: c.archive is not None and c.archive.finished
    )
    assert cp.archive is not None
    assert cp.source.compression == "tar"
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    return job, url, cp, tar, bodies


def _assert_tar_settled(
    s3: Any, bucket: str, job: Any, result: JobResult, bodies: dict[str, bytes]
) -> None:
    root = job.destination.prefix
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read())
    assert [m["path"] for m in manifest["members"]] == list(TAR_NAMES)
    for m in manifest["members"]:
        body = bodies[m["path"]]
        assert s3.get_object(Bucket=bucket, Key=m["key"])["Body"].read() == body
        assert m["sha256"] == hashlib.sha256(body).hexdigest()
        assert m["records"] == body.count(b"\n")
    assert _uploads(s3, bucket) == []
    assert not any("checkpoints/" in k for k in _keys(s3, bucket, root))


@pytest.fixture
def released_tar(  # noqa: PLR0917 - pytest passes fixtures by name
    s3: Any,
    bucket: str,
    rsettings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    tmp_path: Any,
) -> tuple[Any, str, Checkpoint, bytes, dict[str, bytes]]:
    """:func:`_released_tar` with the test's settings."""
    return _released_tar(
        s3,
        bucket,
        settings=rsettings,
        file_server=file_server,
        make_job=make_job,
        tmp_path=tmp_path,
    )


def test_plain_tar_resumes_at_a_member_boundary(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, released_tar: Any
) -> None:
    job, url, cp, tar, bodies = released_tar
    archive = cp.archive
    assert archive is not None
    done = [f.key.rsplit("/", 1)[1] for f in archive.finished]
    assert done == list(TAR_NAMES[: len(done)])
    # The resume point is the next entry's header (a ustar header block), and each
    # finished object is whole in its upload with its sha256 state at its end.
    assert tar[archive.offset + 257 : archive.offset + 262] == b"ustar"
    assert (
        tar[archive.offset : archive.offset + 100].rstrip(b"\0").decode() == (TAR_NAMES[len(done)])
    )
    assert archive.seen == done
    for f in archive.finished:
        assert f.size == len(bodies[f.key.rsplit("/", 1)[1]])
    before = len(file_server.requests_for(url))
    with _part_uploads(s3, keyed=True) as uploaded:
        result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == archive.offset > 0
    (request,) = file_server.requests_for(url)[before:]
    assert request["Range"] == f"bytes={archive.offset}-"
    assert request["If-Range"] == file_server.files[_path(file_server, url)].etag
    # No part of a finished object went up again.
    finished = {f.key for f in archive.finished}
    assert not [c for c in uploaded if c[0] in finished]
    _assert_tar_settled(s3, bucket, job, result, bodies)
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read())
    assert manifest["source"]["sha256"] == hashlib.sha256(tar).hexdigest()


def test_a_resumed_tar_released_again_resumes_further(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, released_tar: Any
) -> None:
    job, url, cp, _tar, bodies = released_tar
    assert cp.archive is not None
    first = cp.archive
    served = file_server.files[_path(file_server, url)]
    served.bytes_per_second = len(served.body) // 10
    # The resumed attempt carries the finished objects on and checkpoints a later entry.
    again = _release_after(
        s3,
        bucket,
        job,
        rsettings,
        until=lambda c: c.archive is not None and len(c.archive.finished) > len(first.finished),
    )
    assert again.archive is not None
    assert again.archive.offset > first.offset
    assert again.archive.finished[: len(first.finished)] == first.finished
    served.bytes_per_second = 0
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == again.archive.offset
    _assert_tar_settled(s3, bucket, job, result, bodies)


def test_a_tar_with_a_small_member_first_has_no_entry_to_resume_at(
    *,
    s3: Any,
    bucket: str,
    rsettings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    tmp_path: Any,
) -> None:
    # The small member is held for one PutObject until the commit: nothing of it is in
    # S3, so no entry after it may be resumed at; parts are reused instead.
    _tar, bodies = _plain_tar(tmp_path)
    (tmp_path / "0-small.jsonl").write_bytes(b'{"small": 1}\n')
    bodies = {"0-small.jsonl": b'{"small": 1}\n', **bodies}
    tar = subprocess.run(
        ["tar", "-cf", "-", "-C", str(tmp_path), *bodies], capture_output=True, check=True
    ).stdout
    url = file_server.add(tar, name="part.tar", bytes_per_second=len(tar) // 10)
    job = make_job(url, body=tar, file_name="part.tar", compression="tar")
    cp = _release_after(
        s3, bucket, job, rsettings, until=lambda c: sum(len(m.parts) for m in c.members) >= 3
    )
    assert cp.archive is None
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == 0
    assert result.parts_reused >= 3
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=result.manifest_key)["Body"].read())
    assert [m["path"] for m in manifest["members"]] == list(bodies)
    for m in manifest["members"]:
        assert s3.get_object(Bucket=bucket, Key=m["key"])["Body"].read() == bodies[m["path"]]
    assert _uploads(s3, bucket) == []


@dataclass
class _Released:
    """A job released with a frame/member/entry resume point, its file served at speed."""

    job: Any
    cp: Checkpoint
    payload: bytes  # the file as served
    offset: int  # the resume point's source offset
    forge: Callable[..., None]  # store the checkpoint again with its point changed
    settled: Callable[[JobResult], None]  # the committed output is byte for byte right


@pytest.fixture(params=["gzip", "tar"])
def released(  # noqa: PLR0917 - pytest passes fixtures by name
    request: Any,
    s3: Any,
    bucket: str,
    rsettings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    tmp_path: Any,
) -> _Released:
    """A multi-member gzip (resume point) or a plain tar (archive point), released."""
    if request.param == "gzip":
        job, _url, cp = _released_gzip(s3, bucket, rsettings, file_server, make_job)
        assert cp.resume is not None
        return _Released(
            job,
            cp,
            GZIP_BODY,
            cp.resume.offset,
            lambda **changes: _forge(s3, bucket, job, cp, "resume", **changes),
            lambda result: _assert_settled(s3, bucket, job, result, BODY),
        )
    job, _url, cp, tar, bodies = _released_tar(
        s3,
        bucket,
        settings=rsettings,
        file_server=file_server,
        make_job=make_job,
        tmp_path=tmp_path,
    )
    assert cp.archive is not None
    return _Released(
        job,
        cp,
        tar,
        cp.archive.offset,
        lambda **changes: _forge(s3, bucket, job, cp, "archive", **changes),
        lambda result: _assert_tar_settled(s3, bucket, job, result, bodies),
    )


def test_resume_point_whose_offset_disagrees_with_its_hash_is_discarded(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, released: _Released
) -> None:
    # An offset that is not where the saved source hash stopped.
    released.forge(offset=released.offset + 512)
    result = Pipeline(rsettings, s3=s3).run(released.job)
    # Discarded before anything was read: its uploads aborted, everything uploaded anew.
    assert result.resumed_from == 0
    assert result.parts_reused == 0
    released.settled(result)


def test_resume_point_off_a_start_is_discarded_not_refused(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, released: _Released
) -> None:
    from exportpipe.worker.sha256state import ResumableSha256

    # Self-consistent (the source hash stops at the offset) but inside a gzip member or
    # a tar member's data: the file is good, so the decoder's failure there must not
    # refuse it.
    offset = released.offset + 4096
    state = ResumableSha256()
    state.update(released.payload[:offset])
    released.forge(offset=offset, source_hash=state.state())
    job = released.job
    with pytest.raises(ResumeDiscarded):
        Pipeline(rsettings, s3=s3).run(job)
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None
    assert not _keys(s3, bucket, f"{job.destination.prefix}rejected/")
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == 0
    released.settled(result)


def test_a_compressed_tar_of_one_member_gets_no_frame_resume_point(
    *,
    s3: Any,
    bucket: str,
    rsettings: WorkerSettings,
    file_server: Any,
    make_job: Any,
    tmp_path: Any,
) -> None:
    # One member, so one output object; but its bytes are the tar's, not the decoded
    # stream's: a frame start of the zstd stream is no place to resume that member.
    # Random content, so the compressed file arrives over many reads (the job must
    # still be running when it is released).
    body = b"".join(
        b'{"id": %d, "r": "%s"}\n' % (i, os.urandom(24).hex().encode()) for i in range(300_000)
    )
    (tmp_path / "part.jsonl").write_bytes(body)
    tar = subprocess.run(
        ["tar", "-cf", "-", "-C", str(tmp_path), "part.jsonl"], capture_output=True, check=True
    ).stdout
    step = 1_000_003
    payload = b"".join(
        zstandard.ZstdCompressor(level=1).compress(tar[i : i + step])
        for i in range(0, len(tar), step)
    )
    url = file_server.add(payload, name="part.tar.zst", bytes_per_second=len(payload) // 12)
    job = make_job(url, body=payload, file_name="part.tar.zst", compression=None)
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    assert cp.resume is None
    file_server.files[_path(file_server, url)].bytes_per_second = 0
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == 0
    assert result.parts_reused == len(cp.members[0].parts)
    _assert_settled(s3, bucket, job, result, body)


def test_checkpoint_whose_uploads_were_aborted_starts_clean(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    # The bucket's lifecycle rule ends incomplete uploads after some days.
    for m in cp.members:
        s3.abort_multipart_upload(Bucket=bucket, Key=m.key, UploadId=m.upload_id)
    _assert_starts_clean(s3, bucket, rsettings, job)


def test_stale_checkpoint_of_another_source_is_discarded(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    # The file was re-exported: same file id, other content, sha256 and size.
    other = jsonl(300_000)
    url2 = file_server.add(other, name="part.jsonl")
    job2 = make_job(
        url2, body=other, file_name="part.jsonl", compression="none", export_id=job.export_id
    )
    result = Pipeline(rsettings, s3=s3).run(job2)
    assert result.resumed_from == 0
    assert cp.members[0].upload_id not in {u["UploadId"] for u in _uploads(s3, bucket)}
    _assert_settled(s3, bucket, job2, result, other)


def test_checkpoint_part_that_differs_from_s3_starts_clean(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    m = cp.members[0]
    # Part 1 replaced by other bytes after the checkpoint was written.
    s3.upload_part(Bucket=bucket, Key=m.key, UploadId=m.upload_id, PartNumber=1, Body=b"x" * PART)
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == 0
    _assert_settled(s3, bucket, job, result, BODY)


def test_kill_after_checkpoint_before_next_part_lands(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    assert cp.resume is not None
    m = cp.members[0]
    # A killed attempt got the next part (a torn one, even) into S3 but never
    # checkpointed it: the resumed attempt must upload that part again.
    nxt = cp.resume.part + 1
    s3.upload_part(
        Bucket=bucket, Key=m.key, UploadId=m.upload_id, PartNumber=nxt, Body=b"torn" * 1000
    )
    with _part_uploads(s3) as uploaded:
        result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == cp.resume.offset
    assert nxt in uploaded
    _assert_settled(s3, bucket, job, result, BODY)


def test_source_changed_since_checkpoint_restarts_clean(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    # No sha256/size in the job: only the server's ETag tells versions apart.
    job = make_job(url, file_name="part.jsonl", compression="none")
    _release_after(s3, bucket, job, rsettings, parts=2)
    changed = jsonl(340_000)
    _serve_changed_and_restart(s3, bucket, rsettings, file_server, job, url, changed, changed)


def test_two_resumed_attempts_at_once_commit_once(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    _release_after(s3, bucket, job, rsettings, parts=2)
    results: list[JobResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def attempt() -> None:
        start.wait()
        try:
            results.append(Pipeline(rsettings, s3=s3).run(job))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # Both continue the same upload with identical parts; one commits. The other is a
    # duplicate, or (if it lost the upload under its feet) retries later.
    assert "done" in [r.status for r in results]
    assert all(isinstance(e, CommitConflict) for e in errors), errors
    if errors:
        assert Pipeline(rsettings, s3=s3).run(job).status == "duplicate"
    done = next(r for r in results if r.status == "done")
    _assert_settled(s3, bucket, job, done, BODY)


def test_resume_off_aborts_on_release_and_starts_over(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    off = rsettings.model_copy(update={"resume": False})
    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cancel = CancelToken()
    threading.Timer(2.0, cancel.cancel, args=(JobReleased("released"),)).start()
    with pytest.raises(JobReleased):
        Pipeline(off, s3=s3).run(job, cancel=cancel)
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None


def test_a_part_is_reused_only_if_its_content_matches() -> None:
    import base64
    import zlib

    from exportpipe.worker.checkpoint import CheckpointPart
    from exportpipe.worker.resume import part_matches

    body = bytearray(b"abc" * 1000)
    md5 = hashlib.md5(body).hexdigest()  # noqa: S324 - S3's part ETag
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    assert part_matches(CheckpointPart(1, f'"{md5}"', crc, len(body)), body, "CRC32")
    other = bytearray(body)
    other[7] ^= 1
    assert not part_matches(CheckpointPart(1, f'"{md5}"', crc, len(body)), other, "CRC32")
    assert not part_matches(CheckpointPart(1, f'"{md5}"', crc, len(body) + 1), body, "CRC32")
    # A KMS-encrypted part's ETag is no MD5: the checksum alone decides.
    kms = CheckpointPart(1, '"kms-opaque-etag"', crc, len(body))
    assert part_matches(kms, body, "CRC32")
    assert not part_matches(kms, other, "CRC32")
    # Nothing comparable (no MD5 ETag, a checksum this worker cannot compute): no reuse.
    assert not part_matches(CheckpointPart(1, '"x"', "AAAA", len(body)), body, "CRC32C")


def test_checkpoint_naming_another_files_key_is_discarded(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    import msgspec

    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    cp = _release_after(s3, bucket, job, rsettings, parts=2)
    m = cp.members[0]
    # A checkpoint must never make this job write another file's key.
    foreign = m.key.replace("/data/file-1/", "/data/file-2/")
    upload = s3.create_multipart_upload(Bucket=bucket, Key=foreign)["UploadId"]
    forged = msgspec.structs.replace(
        cp, members=[msgspec.structs.replace(m, key=foreign, upload_id=upload, parts=[])]
    )
    CheckpointStore(s3, bucket).write(checkpoint_key(job.destination.prefix, job.file_id), forged)
    s3.abort_multipart_upload(Bucket=bucket, Key=m.key, UploadId=m.upload_id)
    result = Pipeline(rsettings, s3=s3).run(job)
    assert result.resumed_from == 0
    assert foreign not in _keys(s3, bucket, job.destination.prefix)
    # The other file's upload was neither used nor aborted.
    assert [u["UploadId"] for u in _uploads(s3, bucket)] == [upload]
    s3.abort_multipart_upload(Bucket=bucket, Key=foreign, UploadId=upload)
    _assert_settled(s3, bucket, job, result, BODY)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_restored_validator_judges_the_rest_as_the_whole_file_would(fmt: str) -> None:
    from exportpipe.worker.validate import validator_for

    if fmt == "jsonl":
        body = "\ufeff".encode() + jsonl(2000)
    else:
        body = "\ufeffid,note\n".encode() + b"".join(
            b'%d,"a ""quoted""\nnote %d"\n' % (i, i) for i in range(2000)
        )
    for cut in (1000, 4099, 33333):
        first = validator_for(fmt, what="x", max_line_bytes=1 << 20)  # type: ignore[arg-type]
        first.feed(body[:cut])
        saved = orjson.loads(orjson.dumps(first.save_state()))
        again = validator_for(fmt, what="x", max_line_bytes=1 << 20)  # type: ignore[arg-type]
        again.restore_state(saved)
        again.feed(body[cut:])
        whole = validator_for(fmt, what="x", max_line_bytes=1 << 20)  # type: ignore[arg-type]
        whole.feed(body)
        assert again.finish() == whole.finish() == 2000


def test_a_last_delivery_rejection_ends_the_checkpointed_uploads(
    *, s3: Any, bucket: str, rsettings: WorkerSettings, file_server: Any, make_job: Any
) -> None:
    from exportpipe.common.errors import UpstreamUnavailable

    url = file_server.add(BODY, name="part.jsonl", bytes_per_second=6 * MIB)
    job = make_job(url, body=BODY, file_name="part.jsonl", compression="none")
    _release_after(s3, bucket, job, rsettings, parts=2)
    assert _uploads(s3, bucket)
    # The runtime's last allowed receive failed transiently: the file is refused.
    Pipeline(rsettings, s3=s3).reject(job, UpstreamUnavailable("host down", reason="http_503"))
    assert _uploads(s3, bucket) == []
    assert _checkpoint(s3, bucket, job) is None
    root = job.destination.prefix
    assert _keys(s3, bucket, root) == [f"{root}rejected/{job.file_id}.json"]
