"""Streamed uploads that commit only when told, with conditional writes.

An :class:`Uploader` serves one job. :meth:`Uploader.open` begins one output object.
An object that fits in one part (``part_size``) is held in memory and committed with a
single conditional ``PutObject`` carrying its checksum: one request instead of three
(create, part, complete), which is most of what a small file costs. Once more than a
part arrives, the object becomes a multipart upload: :meth:`ObjectUpload.write` cuts
the stream into fixed-size parts and uploads them on a small thread pool while the
caller keeps producing. Memory is bounded: at most ``parts_in_flight`` parts are
uploading and one is filling, per job. Part buffers are allocated once and reused
(:class:`PartBuffers`), so a long file costs no new memory, page faults or
reallocation per part.

Nothing is visible in S3 until :meth:`ObjectUpload.commit`, which the pipeline calls
only after the whole source was downloaded, verified and validated. Commits use
``If-None-Match: *``, so two workers racing on one job can never overwrite each other's
object; a commit that finds the key taken compares the existing object's ETag with the
one its own parts produce (parts are cut at the same boundaries by every worker, so the
same bytes give the same ETag) and treats an identical object as its own; a single
``PutObject`` does the same with its plain MD5 ETag. Every upload not committed is
aborted on every failure path (:meth:`Uploader.abort_all`).

Each part (and each single-request object) carries an S3 checksum (CRC32 by default)
and the commit lists the parts' checksums, as real S3 requires once the upload was
created with an algorithm.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import JobReleased, RetryableError
from exportpipe.common.retry import aws_error_code, call_aws, call_aws_pages
from exportpipe.worker.settings import UploadTuning

__all__ = [
    "CommitConflict",
    "ObjectUpload",
    "PartObserver",
    "PartRecord",
    "Uploader",
    "abort_if_open",
    "abort_uploads_under",
]

# A small object is held in a growing buffer up to this size; a bigger one in a pooled
# part buffer (a small file never allocates a part; a large one's first part is pooled).
_HEAD_BYTES = 1 << 20
_CHECKSUM_KEY = {"CRC32": "ChecksumCRC32", "CRC32C": "ChecksumCRC32C", "SHA256": "ChecksumSHA256"}


class CommitConflict(RetryableError):
    """Another attempt of the same job holds or committed this key with other content.

    Retryable: by the next delivery the other attempt has written its manifest (and the
    job is acknowledged as a duplicate), or its leftovers have gone stale and are
    replaced.
    """

    reason = "commit_conflict"


def _settled(fut: Future[None]) -> bool:
    """Wait for ``fut``; True if it ran to the end (False if it failed or was cancelled)."""
    try:
        fut.result()
    except Exception:  # includes CancelledError
        return False
    return True


def is_precondition_failed(exc: BaseException) -> bool:
    """True for S3's 412 answer to ``If-None-Match: *`` on an existing key."""
    return isinstance(exc, ClientError) and (
        aws_error_code(exc) == "PreconditionFailed"
        or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
    )


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part, as CompleteMultipartUpload needs it."""

    number: int
    etag: str
    checksum: str | None


@dataclass
class ObjectUpload:
    """One object being written (see the module docstring).

    Attributes:
        key: the object key.
        upload_id: the multipart upload's id; ``None`` while the object still fits in one
            part (it is then committed with one ``PutObject``).
        size: bytes written so far.
        sha256: hex sha256 of the bytes written (final after :meth:`close`).
        outcome: after :meth:`commit`: ``"created"`` or ``"identical"`` (an equal object
            was already there).
    """

    uploader: Uploader
    key: str
    content_type: str = "application/octet-stream"
    upload_id: str | None = None
    size: int = 0
    outcome: str | None = None
    _hash: Any = field(default_factory=hashlib.sha256)
    _head: bytearray = field(default_factory=bytearray)  # a small object, held whole
    _buf: bytearray | None = None  # the part being filled (a pooled buffer)
    _fill: int = 0
    _next_part: int = 1
    _futures: list[Future[PartRecord]] = field(default_factory=list)
    _hashing: list[Future[None]] = field(default_factory=list)
    _closed: bool = False
    _finished: bool = False  # committed or aborted

    @property
    def sha256(self) -> str:
        """Hex sha256 of the content (complete once :meth:`close` was called)."""
        for fut in self._hashing:
            fut.result()
        return str(self._hash.hexdigest())

    def write(self, data: bytes) -> None:
        """Append ``data``; full parts are handed to the upload pool.

        Raises:
            ExportPipeError: the job was cancelled while waiting for a free part slot
                (the token's reason).
            ExportPipeError / ClientError: an earlier part failed to upload.
        """
        if not data:
            return
        part_size = self.uploader.part_size
        if self.upload_id is None:
            if self.size + len(data) > part_size:
                # More than one part: a multipart upload; what is held starts part 1.
                self.upload_id = self.uploader.create_upload(self)
                self._to_part_buffer()
            elif self._buf is None and self.size + len(data) <= _HEAD_BYTES:
                self._head += data
                self.size += len(data)
                return
            else:
                # Bigger than a small object: held in a pooled part buffer, as a large
                # object's first part will be, so large files keep their memory profile.
                self._to_part_buffer()
                assert self._buf is not None  # noqa: S101 - _to_part_buffer just set it
                self._buf[self._fill : self._fill + len(data)] = data
                self._fill += len(data)
                self.size += len(data)
                return
        self.size += len(data)
        view = memoryview(data)
        while view:
            if self._buf is None:
                self._buf, self._fill = self.uploader.buffers.take(), 0
            n = min(part_size - self._fill, len(view))
            self._buf[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == part_size:
                self._submit()

    def _to_part_buffer(self) -> None:
        """Move the held bytes into a pooled part buffer (taken if there is none yet)."""
        if self._buf is None and (self._head or self.upload_id is None):
            self._buf = self.uploader.buffers.take()
            self._buf[: len(self._head)] = self._head
            self._fill = len(self._head)
            self._head = bytearray()

    def _single_body(self) -> bytes | bytearray | memoryview:
        return self._head if self._buf is None else memoryview(self._buf)[: self._fill]

    def _release_single(self) -> None:
        buf, self._buf, self._fill, self._head = self._buf, None, 0, bytearray()
        if buf is not None:
            self.uploader.buffers.give(buf)

    @property
    def single(self) -> bool:
        """True while the object is committed with one ``PutObject``."""
        return self.upload_id is None

    def close(self) -> None:
        """Hand the last (possibly short, possibly empty) part to the pool."""
        if self._closed:
            return
        self._closed = True
        if self.single:
            self._hash.update(self._single_body())
        elif self._fill or self._next_part == 1:
            self._submit()

    def _submit(self) -> None:
        for fut in self._futures:  # raise the first part failure already seen
            if fut.done() and fut.exception() is not None:
                fut.result()
        buf, fill = self._buf, self._fill
        self._buf, self._fill = None, 0
        if buf is None:  # an empty object: one empty part
            body, pooled = bytearray(), False
        elif fill == len(buf):  # a whole part travels in its pooled buffer
            body, pooled = buf, True
        else:  # a short last part: copy it out and recycle the buffer now
            body, pooled = bytearray(memoryview(buf)[:fill]), False
            self.uploader.buffers.give(buf)
        number, self._next_part = self._next_part, self._next_part + 1
        # Hashed part by part on the job's single hashing thread (FIFO keeps the order;
        # hashlib releases the GIL), off the thread that decompresses and validates.
        hashed = self.uploader.hash_in_order(self._hash_part, number, body)
        self._hashing.append(hashed)
        self._futures.append(
            self.uploader.submit_part(self, number, body, hashed if pooled else None)
        )

    @property
    def part_count(self) -> int:
        """Parts handed over so far (the number of the last one)."""
        return self._next_part - 1

    def hash_with(self, hasher: Any) -> None:
        """Hash the content with ``hasher`` (a sha256 whose state can be saved, ADR 0020),
        holding the bytes written so far."""
        self._hash = hasher

    def continue_after(self, parts: list[PartRecord]) -> None:
        """Count ``parts`` (numbered ``1..n``, already in S3) as written."""
        for record in parts:
            done: Future[PartRecord] = Future()
            done.set_result(record)
            self._futures.append(done)
        self._next_part = len(self._futures) + 1

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for this object's parts and hashing in progress."""
        wait(self._futures, timeout=timeout)
        wait(self._hashing, timeout=timeout)

    def _hash_part(self, number: int, body: bytearray) -> None:
        self._hash.update(body)
        # resume hook (ADR 0020): the output's sha256 state at this part boundary.
        observer = self.uploader.observer
        if observer is not None and hasattr(self._hash, "state"):
            observer.part_hashed(self.key, number, self._hash.state())

    def commit(self) -> str:
        """Complete the upload with ``If-None-Match: *``; return :attr:`outcome`.

        Raises:
            CommitConflict: the key holds a different, recently written object, or our
                upload was aborted by another attempt that committed first.
        """
        self.close()
        if self.single:
            body = bytes(self._single_body())
            self._release_single()
            self.outcome = self.uploader.put_single(self, body)
        else:
            # Waits for every part, in order (raises the first part failure).
            self.outcome = self.uploader.complete(self, [f.result() for f in self._futures])
        self._finished = True
        return self.outcome

    def abort(self) -> None:
        """Abort the upload (idempotent; failures to abort are logged, not raised)."""
        if self._finished:
            return
        self._finished = True
        if self.upload_id is None:
            self._release_single()
            return  # nothing was sent
        for fut in self._futures:
            fut.cancel()
        # Let parts already on the wire land first: S3 may keep a part that finishes
        # after the abort, and the upload would then have to be aborted again.
        wait(self._futures, timeout=120)
        self.uploader.abort_upload(self.key, self.upload_id)


class PartBuffers:
    """Part-sized buffers kept for reuse, at most ``keep`` of them.

    A cache, not a limit: :meth:`take` never blocks (the upload slots bound the parts
    in flight); buffers beyond ``keep`` are left to the garbage collector.
    """

    def __init__(self, size: int, keep: int) -> None:
        self._size = size
        self._keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        """A part-sized buffer: a kept one, or a new one."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self._size)

    def give(self, buf: bytearray) -> None:
        """Keep ``buf`` for reuse (if there is room and it is part-sized)."""
        with self._lock:
            if len(self._free) < self._keep and len(buf) == self._size:
                self._free.append(buf)


class Uploader:
    """Multipart uploads of one job into one bucket (see the module docstring)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        tuning: UploadTuning,
        cancel: CancelToken | None = None,
        on_warning: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.part_size = tuning.part_size
        self._algorithm = tuning.checksum_algorithm
        self._checksum_key = _CHECKSUM_KEY[tuning.checksum_algorithm]
        self._stale = tuning.stale_commit_seconds
        self._cancel = cancel or CancelToken()
        self._slots = threading.BoundedSemaphore(tuning.parts_in_flight)
        self._pool = ThreadPoolExecutor(tuning.parts_in_flight, thread_name_prefix="upload")
        self.buffers = PartBuffers(tuning.part_size, tuning.parts_in_flight + 1)
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="hash")
        self._objects: list[ObjectUpload] = []
        self._warn = on_warning or (lambda _msg, _extra: None)
        # resume hook (ADR 0020): told of every part uploaded and hashed; may supply a
        # part already in S3 instead of uploading it again (see exportpipe.worker.resume).
        self.observer: PartObserver | None = None
        # Time spent in CompleteMultipartUpload: S3 assembles the object there, and a
        # resumed job's share of it shows how much of a run resuming cannot save.
        self.complete_seconds = 0.0

    # -- objects ------------------------------------------------------------

    def open(self, key: str, *, content_type: str = "application/octet-stream") -> ObjectUpload:
        """Begin object ``key`` (no request yet; nothing visible until commit)."""
        obj = ObjectUpload(uploader=self, key=key, content_type=content_type)
        self._objects.append(obj)
        return obj

    @property
    def opened_multipart(self) -> bool:
        """True once this job asked S3 for a multipart upload (it may leave one open)."""
        return any(not o.single for o in self._objects)

    # -- what an ObjectUpload asks of its uploader ---------------------------

    def create_upload(self, obj: ObjectUpload) -> str:
        """Create ``obj``'s multipart upload; return its id."""
        response = call_aws(
            self.s3.create_multipart_upload,
            Bucket=self.bucket,
            Key=obj.key,
            ContentType=obj.content_type,
            ChecksumAlgorithm=self._algorithm,
        )
        upload_id = str(response["UploadId"])
        if self.observer is not None:  # resume hook (ADR 0020): the upload now exists
            self.observer.upload_created(obj.key, upload_id)
        return upload_id

    def attach(
        self,
        key: str,
        upload_id: str,
        *,
        parts: list[PartRecord] | None = None,
        size: int = 0,
        hasher: Any = None,
    ) -> ObjectUpload:
        """Continue an open multipart upload of an earlier attempt (ADR 0020).

        ``parts`` (numbered ``1..n``) are already in S3 and hold the first ``size``
        bytes, whose running sha256 is ``hasher``; writing continues with part ``n + 1``.
        With no ``parts`` the object is written from its first byte again (the
        observer may still supply parts already uploaded).
        """
        obj = ObjectUpload(uploader=self, key=key, upload_id=upload_id, size=size)
        if hasher is not None:
            obj.hash_with(hasher)
        obj.continue_after(parts or [])
        self._objects.append(obj)
        return obj

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the parts on the wire (a released job keeps them)."""
        deadline = time.monotonic() + timeout
        for obj in self._objects:
            obj.settle(max(0.0, deadline - time.monotonic()))

    def _acquire_slot(self) -> None:
        while not self._slots.acquire(timeout=0.5):
            self._cancel.check()

    def hash_in_order(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        """Run ``fn(*args)`` on the job's one hashing thread, after what was handed before."""
        return self._hasher.submit(fn, *args)

    def submit_part(
        self, obj: ObjectUpload, number: int, body: bytearray, hashed: Future[None] | None
    ) -> Future[PartRecord]:
        """Upload part ``number`` of ``obj`` once a slot is free (waits, cancellable).

        A pooled ``body`` is recycled after the upload if ``hashed`` has finished with it.
        """
        self._acquire_slot()
        try:
            return self._pool.submit(self._run_part, obj, number, body, hashed)
        except BaseException:
            self._slots.release()
            raise

    def _run_part(
        self, obj: ObjectUpload, number: int, body: bytearray, hashed: Future[None] | None
    ) -> PartRecord:
        """Upload one part, then free its slot; a pooled ``body`` is recycled once hashed."""
        try:
            return self._upload_part(obj, number, body)
        finally:
            if hashed is not None and _settled(hashed):
                self.buffers.give(body)
            del body
            self._slots.release()

    def _upload_part(self, obj: ObjectUpload, number: int, body: bytearray) -> PartRecord:
        # With a resume observer (ADR 0020) a part already handed over still goes up
        # after a release: the checkpoint keeps it, the next attempt need not redo it.
        if self.observer is None or not isinstance(self._cancel.reason, JobReleased):
            self._cancel.check()
        if self.observer is not None:  # resume hook (ADR 0020)
            known = self.observer.reuse(obj.key, number, body)
            if known is not None:
                return known
        try:
            response = call_aws(
                self.s3.upload_part,
                Bucket=self.bucket,
                Key=obj.key,
                UploadId=obj.upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=self._algorithm,
            )
        except ClientError as exc:
            if aws_error_code(exc) == "NoSuchUpload":
                # Another attempt committed the job and cleared the uploads under it.
                raise CommitConflict(
                    f"{obj.key}: upload aborted by a concurrent attempt", reason="upload_aborted"
                ) from None
            raise
        record = PartRecord(number, response["ETag"], response.get(self._checksum_key))
        if self.observer is not None:  # resume hook (ADR 0020)
            self.observer.part_uploaded(obj.key, record, len(body))
        return record

    def put_single(self, obj: ObjectUpload, body: bytes) -> str:
        """Commit a one-part object with one conditional ``PutObject``."""
        etag = hashlib.md5(body).hexdigest()  # noqa: S324 - S3's ETag, not security
        for attempt in range(2):
            try:
                if self.put_if_absent(obj.key, body, content_type=obj.content_type):
                    return "created"
            except ClientError as exc:
                if aws_error_code(exc) == "ConditionalRequestConflict":
                    # S3's 409: another conditional write to the key is in progress.
                    raise CommitConflict(
                        f"{obj.key}: written concurrently by another attempt"
                    ) from None
                raise
            verdict = self._existing(obj, etag, attempt)
            if verdict is not None:
                return verdict
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _existing(self, obj: ObjectUpload, etag: str, attempt: int) -> str | None:
        """The key already exists: ``"identical"``, ``None`` (replaced, try again) or raise.

        Raises:
            CommitConflict: a different object, written recently by another attempt.
        """
        head = call_aws(self.s3.head_object, Bucket=self.bucket, Key=obj.key)
        if int(head["ContentLength"]) == obj.size and str(head["ETag"]).strip('"') == etag:
            return "identical"
        age = (datetime.now(UTC) - head["LastModified"]).total_seconds()
        if attempt == 0 and age >= self._stale:
            # Left by an attempt that died between its commits and its manifest.
            self._warn("replacing a stale uncommitted object", {"key": obj.key, "age": age})
            call_aws(self.s3.delete_object, Bucket=self.bucket, Key=obj.key)
            return None
        raise CommitConflict(
            f"{obj.key}: a different object was written by another attempt "
            f"{int(age)} s ago; retrying after it commits or goes stale"
        )

    def complete(self, obj: ObjectUpload, parts: list[PartRecord]) -> str:
        """Complete ``obj``'s multipart upload with ``If-None-Match: *``; the outcome."""
        assert obj.upload_id is not None  # noqa: S101 - only multipart objects get here
        payload = {
            "Parts": [
                {"PartNumber": p.number, "ETag": p.etag}
                | ({self._checksum_key: p.checksum} if p.checksum else {})
                for p in parts
            ]
        }
        for attempt in range(2):
            started = time.monotonic()
            try:
                call_aws(
                    self.s3.complete_multipart_upload,
                    Bucket=self.bucket,
                    Key=obj.key,
                    UploadId=obj.upload_id,
                    MultipartUpload=payload,
                    IfNoneMatch="*",
                )
                return "created"
            except ClientError as exc:
                if aws_error_code(exc) in ("NoSuchUpload", "ConditionalRequestConflict"):
                    raise CommitConflict(
                        f"{obj.key}: upload ended by a concurrent attempt ({aws_error_code(exc)})"
                    ) from None
                if not is_precondition_failed(exc):
                    raise
            finally:
                self.complete_seconds += time.monotonic() - started
            # The key exists: ours in effect if identical, else someone else's. S3's ETag
            # of a multipart object is the MD5 of its parts' MD5s, then "-" and their count.
            digest = hashlib.md5(  # noqa: S324 - S3's ETag definition, not a security use
                b"".join(bytes.fromhex(p.etag.strip('"')) for p in parts)
            )
            verdict = self._existing(obj, f"{digest.hexdigest()}-{len(parts)}", attempt)
            if verdict is not None:
                self.abort_upload(obj.key, obj.upload_id)
                return verdict
        raise AssertionError("unreachable: the second attempt returns or raises")

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (failures are warned about, not raised)."""
        try:
            abort_if_open(self.s3, self.bucket, key, upload_id)
        except Exception as exc:
            code = aws_error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            self._warn("abort failed", {"key": key, "error": code})

    def abort_all(self) -> None:
        """Abort every upload of this job that was not committed."""
        for obj in self._objects:
            obj.abort()

    def close(self) -> None:
        """Stop the part pool (after :meth:`abort_all` or all commits)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True, cancel_futures=True)

    # -- small objects and housekeeping ------------------------------------

    def put_if_absent(self, key: str, body: bytes, *, content_type: str) -> bool:
        """PutObject with ``If-None-Match: *``; False when the key already exists."""
        try:
            call_aws(
                self.s3.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ChecksumAlgorithm=self._algorithm,
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise
        return True

    def abort_foreign_uploads(self, prefix: str) -> int:
        """Abort open multipart uploads under ``prefix`` that are not this job's."""
        return abort_uploads_under(
            self.s3,
            self.bucket,
            prefix,
            keep=frozenset(o.upload_id for o in self._objects if o.upload_id),
        )


class PartObserver(Protocol):
    """What the resume machinery (ADR 0020) hears from an :class:`Uploader`."""

    def reuse(self, key: str, number: int, body: bytearray) -> PartRecord | None:
        """A part already uploaded with exactly this content, or ``None``."""

    def upload_created(self, key: str, upload_id: str) -> None:
        """``key`` outgrew one part: its multipart upload ``upload_id`` was created."""

    def part_uploaded(self, key: str, record: PartRecord, size: int) -> None:
        """Part ``record`` of ``key`` (``size`` bytes) is in S3."""

    def part_hashed(self, key: str, number: int, state: dict[str, Any]) -> None:
        """The object's running sha256 state after part ``number``."""


def abort_uploads_under(
    s3: Any, bucket: str, prefix: str, *, keep: frozenset[str] = frozenset()
) -> int:
    """Abort the open multipart uploads under ``prefix`` except those in ``keep``.

    Called once a job's manifest exists: whatever else is still open there belongs to a
    crashed or losing attempt (a loser then finds the manifest and stops). Returns how
    many were aborted.
    """
    aborted = 0
    for page in call_aws_pages(s3, "list_multipart_uploads", Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            if upload["UploadId"] not in keep:
                aborted += abort_if_open(s3, bucket, upload["Key"], upload["UploadId"])
    return aborted


def abort_if_open(s3: Any, bucket: str, key: str, upload_id: str) -> bool:
    """Abort one multipart upload; False if it was already gone (``NoSuchUpload``)."""
    try:
        call_aws(s3.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if aws_error_code(exc) == "NoSuchUpload":
            return False
        raise
    return True
