"""Durable progress of a job at part boundaries, so an interrupted job can resume (ADR 0020).

A checkpoint is one small JSON object next to the job's output::

    P checkpoints/F.json        (P: the export's root, F: the file id)

It names the open multipart uploads of the attempt that wrote it, the parts each one
holds (number, ETag, S3 checksum, size), and — when the file is uncompressed, or zstd
or gzip with several frames/members — the *resume point*: the last part boundary up to
which every part is uploaded, with the source offset consumed there (for zstd/gzip the
start of the frame/member holding that boundary), the running sha256 states of the
source and the output (:mod:`exportpipe.worker.sha256state`) and the validator's
carried-over state; for a tar without outer compression, the *archive point*: the header
of an entry before which every output object is uploaded whole, with those objects'
sizes, end hash states and record counts. The next delivery of the job reads it
(:mod:`exportpipe.worker.resume`).

:class:`Checkpointer` collects progress from the upload threads (a part uploaded), the
hashing thread (a part hashed) and the job's thread (a part boundary reached) and
writes the checkpoint at most every ``interval`` seconds, plus once more when the job
is released. Between two writes only the parts uploaded since the last write are at
risk, and those are re-uploaded: a checkpoint never names a part that was not uploaded.

A checkpoint is deleted once its job commits or is refused; the uploads it names are
then committed or aborted, so none is left open.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from exportpipe.common.layout import CHECKPOINT_TAG, ExportKeys
from exportpipe.common.retry import call_aws, get_object_or_none
from exportpipe.worker.reentry import ReentryLog
from exportpipe.worker.sha256state import HashState

__all__ = [
    "CHECKPOINT_SCHEMA",
    "ArchivePoint",
    "Checkpoint",
    "CheckpointPart",
    "CheckpointStore",
    "Checkpointer",
    "FinishedObject",
    "MemberCheckpoint",
    "ResumePoint",
    "SourceIdentity",
    "checkpoint_key",
]

CHECKPOINT_SCHEMA = "exportpipe.Checkpoint"


def checkpoint_key(root: str, file_id: str) -> str:
    """The checkpoint's key for file ``file_id`` under the export root ``root``."""
    return ExportKeys.at(root).file(file_id).checkpoint


class CheckpointPart(msgspec.Struct, frozen=True):
    """One uploaded part."""

    number: int
    etag: str
    checksum: str | None
    size: int


class ResumePoint(msgspec.Struct, frozen=True):
    """Where a ranged resume continues: after part ``part`` of the (single) member.

    Attributes:
        part: every part ``1..part`` is uploaded; the next attempt uploads ``part + 1``.
        offset: the source offset the download resumes at: the end of part ``part`` for
            an uncompressed file, the start of a zstd frame for a zstd file, of a gzip
            member for a multi-member gzip file.
        source_hash: the source's running sha256 state at ``offset``.
        output_hash: the output's running sha256 state at the end of part ``part``.
        validator: the content validator's state at the end of part ``part``.
        frame_output: for zstd and gzip, the output offset at which the frame or
            member at ``offset`` starts (the output up to the end of part ``part`` is
            decoded again and dropped); ``None`` for an uncompressed file.
    """

    part: int
    offset: int
    source_hash: HashState
    output_hash: HashState
    validator: dict[str, Any]
    frame_output: int | None = None


class FinishedObject(msgspec.Struct, frozen=True):
    """An output object of a tar whose every byte is in its (open) multipart upload.

    Attributes:
        key: the object's key (its upload and parts are in :attr:`Checkpoint.members`).
        size: its size.
        output_hash: its sha256 state at its end (the digest the manifest records).
        records: what its validator counted.
    """

    key: str
    size: int
    output_hash: HashState
    records: int | None


class ArchivePoint(msgspec.Struct, frozen=True):
    """Where a ranged resume of a plain tar continues: at an entry's first header.

    Attributes:
        offset: the source offset of that header.
        source_hash: the source's running sha256 state at ``offset``.
        seen / entries: member paths and entries before it (the extractor's limits).
        finished: the output objects before it, each uploaded whole.
    """

    offset: int
    source_hash: HashState
    seen: list[str]
    entries: int
    finished: list[FinishedObject]


class MemberCheckpoint(msgspec.Struct, frozen=True):
    """One output object's open multipart upload."""

    path: str
    key: str
    upload_id: str
    parts: list[CheckpointPart]


class SourceIdentity(msgspec.Struct, frozen=True):
    """What the source was: a resume must find the same file.

    Attributes:
        size / sha256: as the job stated them (``None`` if it did not).
        validator: the HTTP ``ETag`` (or ``Last-Modified``) of the first response, sent
            as ``If-Range`` when resuming.
        compression: the compression the file was read with (declared or detected).
    """

    size: int | None
    sha256: str | None
    validator: str | None
    compression: str | None


class Checkpoint(msgspec.Struct, frozen=True):
    """The document stored at :func:`checkpoint_key`."""

    schema: str
    version: int
    job_id: str
    file_id: str
    attempt: str
    written_at: str
    part_size: int
    checksum_algorithm: str
    source: SourceIdentity
    members: list[MemberCheckpoint]
    resume: ResumePoint | None = None
    archive: ArchivePoint | None = None


_decoder = msgspec.json.Decoder(Checkpoint)
_TAGGING = urllib.parse.urlencode([CHECKPOINT_TAG])


class CheckpointStore:
    """Reads, writes and deletes checkpoints in the job's bucket."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def read(self, key: str) -> Checkpoint | None:
        """The checkpoint at ``key``; ``None`` if there is none or it is unreadable."""
        body = get_object_or_none(self.s3, self.bucket, key)
        if body is None:
            return None
        try:
            checkpoint = _decoder.decode(body)
        except msgspec.DecodeError:
            return None  # torn or foreign: treated like no checkpoint (and replaced)
        if checkpoint.schema != CHECKPOINT_SCHEMA or checkpoint.version != 1:
            return None
        return checkpoint

    def write(self, key: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` (a whole-object PUT: S3 never shows half of it)."""
        call_aws(
            self.s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=msgspec.json.encode(checkpoint),
            ContentType="application/json",
            # The bucket expires tagged checkpoints a late write left behind (ADR 0020).
            Tagging=_TAGGING,
        )

    def delete(self, key: str) -> None:
        """Remove the checkpoint (no error if it is gone)."""
        call_aws(self.s3.delete_object, Bucket=self.bucket, Key=key)


@dataclass
class _Member:
    path: str
    key: str
    upload_id: str | None  # None until the object outgrows one part (one PutObject)
    parts: dict[int, CheckpointPart] = field(default_factory=dict)
    hashes: dict[int, HashState] = field(default_factory=dict)  # output sha256 after part n
    boundaries: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    closed: tuple[int, int, int | None] | None = None  # (parts, size, records), tar only


@dataclass(frozen=True)
class _Entry:
    """A tar entry the next attempt could read again from, and the objects before it."""

    offset: int
    source_hash: HashState
    seen: frozenset[str]
    entries: int
    before: list[str]  # keys of the output objects before it, in order


class Checkpointer:
    """Collects one attempt's progress and writes it as a :class:`Checkpoint`.

    Thread-safe: upload and hashing threads report parts, the job's thread reports
    boundaries and calls :meth:`maybe_write`.
    """

    def __init__(
        self,
        store: CheckpointStore,
        key: str,
        *,
        job_id: str,
        file_id: str,
        part_size: int,
        checksum_algorithm: str,
        source: SourceIdentity,
        interval: float,
    ) -> None:
        self.store = store
        self.key = key
        self._job_id = job_id
        self._file_id = file_id
        self._part_size = part_size
        self._algorithm = checksum_algorithm
        self.source = source
        self._interval = interval
        self.ranged = False  # resume points are recorded (single uncompressed member)
        # zstd frame / gzip member starts (a compressed file resumable at them)
        self.starts: ReentryLog | None = None
        # A plain tar: entries to resume at, the objects in the order the tar made them.
        self.archive = False
        self.order: list[str] = []
        self._entries: list[_Entry] = []
        # An object held for one PutObject is not in S3 before the commit: no entry
        # after it can be resumed at, so none is recorded any more.
        self.blocked = False
        self._attempt = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one PUT at a time, so none lands out of order
        self._members: dict[str, _Member] = {}
        self._last_write = time.monotonic()
        self._dirty = False
        self.written = False

    # -- reports ----------------------------------------------------------------

    def member(self, path: str, key: str, upload_id: str | None) -> None:
        """An object was opened (or resumed) for ``path``; ``None``: no upload yet."""
        with self._lock:
            m = self._members.setdefault(key, _Member(path, key, upload_id))
            if m.upload_id is None:
                m.upload_id = upload_id
            self._dirty = True

    def upload_created(self, key: str, upload_id: str) -> None:
        """The multipart upload of an object opened earlier now exists."""
        with self._lock:
            m = self._members.get(key)
            if m is not None and m.upload_id is None:
                m.upload_id = upload_id
                self._dirty = True

    def seed(self, key: str, parts: list[CheckpointPart], resume: ResumePoint | None) -> None:
        """Carry a verified checkpoint's parts (and resume point) into this attempt."""
        with self._lock:
            m = self._members[key]
            for p in parts:
                m.parts[p.number] = p
            if resume is not None:
                m.hashes[resume.part] = resume.output_hash
                m.boundaries[resume.part] = (resume.part * self._part_size, resume.validator)

    def part_uploaded(self, key: str, part: CheckpointPart) -> None:
        """Called by an upload thread once ``part`` is in S3."""
        with self._lock:
            m = self._members.get(key)
            if m is not None:
                m.parts[part.number] = part
                self._dirty = True

    def part_hashed(self, key: str, number: int, state: HashState) -> None:
        """Called by the hashing thread: the output's sha256 state after part ``number``."""
        if not (self.ranged or self.archive):
            return
        with self._lock:
            m = self._members.get(key)
            if m is not None:
                m.hashes[number] = state

    def boundary(self, key: str, number: int, offset: int, validator: Any) -> None:
        """The job's thread consumed exactly up to the end of part ``number``."""
        if not self.ranged:
            return
        state = validator.save_state()
        with self._lock:
            m = self._members.get(key)
            if m is not None:
                m.boundaries[number] = (offset, state)

    def entry(
        self, offset: int, source_hash: HashState, seen: frozenset[str], entries: int
    ) -> None:
        """A tar entry starts at source ``offset``, after the objects opened so far."""
        with self._lock:
            if not self.blocked:
                self._entries.append(_Entry(offset, source_hash, seen, entries, list(self.order)))

    def closed(
        self, key: str, parts: int, size: int, records: int | None, final: HashState | None = None
    ) -> None:
        """A tar's object got all its bytes: ``parts`` parts (0: held for one PutObject)."""
        with self._lock:
            m = self._members.get(key)
            if m is None:
                return
            m.closed = (parts, size, records)
            if final is not None:
                m.hashes[parts] = final
            self.blocked = self.blocked or parts == 0
            # Only the state at its end is ever used again.
            for n in [n for n in m.hashes if n < parts]:
                del m.hashes[n]
            self._dirty = True

    def _archive_point(self, members: dict[str, _Member]) -> ArchivePoint | None:
        """The latest entry before which every object is uploaded whole."""
        for i, entry in reversed(list(enumerate(self._entries))):
            finished = []
            for key in entry.before:
                m = members.get(key)
                if m is None or m.closed is None or m.upload_id is None:
                    break
                count, size, records = m.closed
                if count < 1 or count not in m.hashes:
                    break
                if any(n not in m.parts for n in range(1, count + 1)):
                    break
                finished.append(FinishedObject(key, size, m.hashes[count], records))
            else:
                if entry.offset == 0:
                    return None  # no download saved: part reuse does as well
                # Older entries can never be used again.
                del self._entries[:i]
                return ArchivePoint(
                    entry.offset, entry.source_hash, sorted(entry.seen), entry.entries, finished
                )
        return None

    # -- writing ------------------------------------------------------------------

    def snapshot(self) -> Checkpoint:
        """The checkpoint as of now."""
        with self._lock:
            # An object still within one part has no upload to continue: it is left out.
            members = [m for m in self._members.values() if m.upload_id is not None]
            resume = self._resume_point(members)
            archive = self._archive_point(self._members) if self.archive else None
            return Checkpoint(
                schema=CHECKPOINT_SCHEMA,
                version=1,
                job_id=self._job_id,
                file_id=self._file_id,
                attempt=self._attempt,
                written_at=datetime.now(UTC).isoformat(),
                part_size=self._part_size,
                checksum_algorithm=self._algorithm,
                source=self.source,
                members=[
                    MemberCheckpoint(
                        m.path, m.key, str(m.upload_id), [m.parts[n] for n in sorted(m.parts)]
                    )
                    for m in members
                ],
                resume=resume,
                archive=archive,
            )

    def _resume_point(self, members: list[_Member]) -> ResumePoint | None:
        if not self.ranged or len(members) != 1:
            return None
        m = members[0]
        starts = self.starts
        if starts is not None and not starts.usable:
            return None
        best: ResumePoint | None = None
        n = 1
        while n in m.parts:
            if n in m.hashes and n in m.boundaries:
                output, validator = m.boundaries[n]
                if starts is None:
                    best = ResumePoint(n, output, m.hashes[n], m.hashes[n], validator)
                else:
                    # The last frame/member that starts at or before the end of part n.
                    start = starts.at_or_before(output)
                    # A start at byte 0 saves no download: part reuse does as well.
                    if start is not None and start[0] > 0:
                        src, out, state = start
                        best = ResumePoint(n, src, state, m.hashes[n], validator, out)
            n += 1
        # Older snapshots can never be used again: drop them to keep memory flat.
        if best is not None:
            for table in (m.hashes, m.boundaries):
                for old in [k for k in table if k < best.part]:
                    del table[old]
            if starts is not None and best.frame_output is not None:
                starts.drop_before(best.frame_output)
        return best

    def maybe_write(self) -> None:
        """Write if something changed and ``interval`` seconds passed since the last write.

        Called by the job's thread and by upload threads as parts land (so checkpoints
        go on while the job's thread waits for an upload slot); a call that finds a
        write in progress leaves it to that one.
        """
        if not (self._dirty and time.monotonic() - self._last_write >= self._interval):
            return
        if self._writing.acquire(blocking=False):
            try:
                self._write()
            finally:
                self._writing.release()

    def write(self) -> None:
        """Write the checkpoint now."""
        with self._writing:
            self._write()

    def _write(self) -> None:
        with self._lock:
            self._dirty = False
            self._last_write = time.monotonic()
        self.store.write(self.key, self.snapshot())
        self.written = True

    def member_count(self) -> int:
        """Objects this attempt opened (with or without a multipart upload yet)."""
        with self._lock:
            return len(self._members)
