from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import JobReleased
from exportpipe.worker.settings import UploadTuning
from exportpipe.worker.upload import CommitConflict, Uploader

MIB = 1024 * 1024


def _uploader(
    s3: Any,
    bucket: str,
    *,
    parts_in_flight: int = 2,
    stale_commit_seconds: float = 900.0,
    **kw: Any,
) -> Uploader:
    tuning = UploadTuning(
        part_size=5 * MIB,
        parts_in_flight=parts_in_flight,
        stale_commit_seconds=stale_commit_seconds,
    )
    return Uploader(s3, bucket, tuning=tuning, **kw)


def _open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _write(obj: Any, data: bytes, step: int = 700_000) -> None:
    for i in range(0, len(data), step):
        obj.write(data[i : i + step])


def test_parts_are_cut_at_part_size_and_commit_with_checksums(s3: Any, bucket: str) -> None:
    data = os.urandom(12 * MIB + 123)
    up = _uploader(s3, bucket)
    obj = up.open("out/a.bin")
    _write(obj, data)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0  # nothing visible yet
    assert obj.commit() == "created"
    up.close()
    head = s3.head_object(Bucket=bucket, Key="out/a.bin", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')
    assert s3.get_object(Bucket=bucket, Key="out/a.bin")["Body"].read() == data
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert _open_uploads(s3, bucket) == []


def test_empty_object(s3: Any, bucket: str) -> None:
    up = _uploader(s3, bucket)
    obj = up.open("empty")
    assert obj.commit() == "created"
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0


def test_parts_in_memory_are_bounded(s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    up = _uploader(s3, bucket, parts_in_flight=2)
    live = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Event()
    real = up._upload_part

    def slow_part(obj: Any, number: int, body: bytearray) -> Any:
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        gate.wait(0.2)
        try:
            return real(obj, number, body)
        finally:
            with lock:
                live -= 1

    monkeypatch.setattr(up, "_upload_part", slow_part)
    obj = up.open("bounded")
    _write(obj, os.urandom(26 * MIB))
    obj.commit()
    assert peak == 2


def test_part_buffers_are_reused(s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight parts go through at most parts_in_flight + 1 buffers, and land intact."""
    up = _uploader(s3, bucket, parts_in_flight=2)
    bodies: list[bytearray] = []  # kept alive, so distinct buffers have distinct ids
    real = up._upload_part

    def recording(obj: Any, number: int, body: bytearray) -> Any:
        bodies.append(body)
        return real(obj, number, body)

    monkeypatch.setattr(up, "_upload_part", recording)
    data = os.urandom(40 * MIB + 17)
    obj = up.open("reused")
    _write(obj, data)
    assert obj.commit() == "created"
    up.close()
    assert len(bodies) == 9
    assert len({id(b) for b in bodies}) <= 3 + 1  # the pooled buffers + the last part's copy
    assert s3.get_object(Bucket=bucket, Key="reused")["Body"].read() == data
    assert obj.sha256 == hashlib.sha256(data).hexdigest()


def test_same_content_commit_is_identical(s3: Any, bucket: str) -> None:
    data = os.urandom(6 * MIB)
    first, second = _uploader(s3, bucket), _uploader(s3, bucket)
    a, b = first.open("same"), second.open("same")
    _write(a, data)
    _write(b, data)
    assert a.commit() == "created"
    assert b.commit() == "identical"
    assert _open_uploads(s3, bucket) == []


def test_different_fresh_content_conflicts(s3: Any, bucket: str) -> None:
    first, second = _uploader(s3, bucket), _uploader(s3, bucket)
    a, b = first.open("race"), second.open("race")
    _write(a, b"one" * 1000)
    _write(b, b"two" * 1000)
    a.commit()
    with pytest.raises(CommitConflict):
        b.commit()
    second.abort_all()
    assert s3.get_object(Bucket=bucket, Key="race")["Body"].read() == b"one" * 1000
    assert _open_uploads(s3, bucket) == []


def test_stale_leftover_is_replaced(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="stale", Body=b"left by a crashed attempt")
    up = _uploader(s3, bucket, stale_commit_seconds=0)
    obj = up.open("stale")
    _write(obj, b"fresh")
    assert obj.commit() == "created"
    assert s3.get_object(Bucket=bucket, Key="stale")["Body"].read() == b"fresh"


def test_abort_all_leaves_nothing(s3: Any, bucket: str) -> None:
    up = _uploader(s3, bucket)
    for key in ("x/1", "x/2"):
        _write(up.open(key), os.urandom(6 * MIB))
    up.abort_all()
    up.close()
    assert _open_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_cancelled_writer_stops(s3: Any, bucket: str) -> None:
    cancel = CancelToken()
    up = _uploader(s3, bucket, cancel=cancel, parts_in_flight=1)
    obj = up.open("c")
    cancel.cancel(JobReleased("released at shutdown"))
    with pytest.raises(JobReleased):
        _write(obj, os.urandom(16 * MIB))
    up.abort_all()
    assert _open_uploads(s3, bucket) == []


def test_put_if_absent_and_foreign_uploads(s3: Any, bucket: str) -> None:
    up = _uploader(s3, bucket)
    assert up.put_if_absent("m.json", b"{}", content_type="application/json")
    assert not up.put_if_absent("m.json", b"{}", content_type="application/json")
    s3.create_multipart_upload(Bucket=bucket, Key="data/f/x")
    mine = up.open("data/f/y")
    mine.write(os.urandom(5 * MIB + 1))  # more than a part: a multipart upload of ours
    assert up.abort_foreign_uploads("data/f/") == 1
    assert [u["UploadId"] for u in _open_uploads(s3, bucket)] == [mine.upload_id]
    mine.abort()


def _record_requests(s3: Any) -> list[tuple[str, dict[str, str]]]:
    """Every S3 request the client sends from now on: (operation, headers)."""
    sent: list[tuple[str, dict[str, str]]] = []

    def on_send(request: Any, event_name: str, **_: Any) -> None:
        sent.append((event_name.rsplit(".", 1)[-1], dict(request.headers)))

    s3.meta.events.register("before-send.s3.*", on_send)
    return sent


def _header(headers: dict[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


@pytest.mark.parametrize("size", [0, 3000, 2 * MIB, 5 * MIB])
def test_object_that_fits_one_part_is_one_conditional_put(s3: Any, bucket: str, size: int) -> None:
    data = os.urandom(size)
    up = _uploader(s3, bucket)
    sent = _record_requests(s3)
    obj = up.open("small", content_type="application/x-ndjson")
    _write(obj, data)
    assert sent == []  # nothing is sent before the commit
    assert obj.commit() == "created"
    assert [op for op, _ in sent] == ["PutObject"]
    headers = sent[0][1]
    assert _header(headers, "if-none-match") == "*"
    assert _header(headers, "x-amz-checksum-crc32")
    head = s3.head_object(Bucket=bucket, Key="small")
    assert head["ContentType"] == "application/x-ndjson"
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == data
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert _open_uploads(s3, bucket) == []


def test_one_byte_over_a_part_is_multipart(s3: Any, bucket: str) -> None:
    data = os.urandom(5 * MIB + 1)
    up = _uploader(s3, bucket)
    sent = _record_requests(s3)
    obj = up.open("two-parts")
    _write(obj, data)
    assert obj.commit() == "created"
    up.close()
    ops = sorted(op for op, _ in sent)
    assert ops == ["CompleteMultipartUpload", "CreateMultipartUpload", "UploadPart", "UploadPart"]
    assert s3.head_object(Bucket=bucket, Key="two-parts")["ETag"].endswith('-2"')
    assert s3.get_object(Bucket=bucket, Key="two-parts")["Body"].read() == data
    assert obj.sha256 == hashlib.sha256(data).hexdigest()


def test_small_same_content_commit_is_identical(s3: Any, bucket: str) -> None:
    first, second = _uploader(s3, bucket), _uploader(s3, bucket)
    a, b = first.open("same-small"), second.open("same-small")
    _write(a, b"same" * 100)
    _write(b, b"same" * 100)
    assert a.commit() == "created"
    assert b.commit() == "identical"


def test_aborting_a_small_object_sends_nothing(s3: Any, bucket: str) -> None:
    up = _uploader(s3, bucket)
    sent = _record_requests(s3)
    obj = up.open("never")
    _write(obj, b"abc")
    up.abort_all()
    assert sent == []
    assert not up.opened_multipart
