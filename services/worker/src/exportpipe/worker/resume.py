"""Resuming a job where an earlier attempt stopped (ADR 0020).

:meth:`Resumer.prepare` runs before a job streams. It reads the file's checkpoint
(:mod:`exportpipe.worker.checkpoint`), checks it against the job and the source it
names and against S3 (``ListParts`` of every upload it names), and picks one of:

``fresh``
    No usable checkpoint. A checkpoint that does not match (another source, another
    part size, an upload gone — e.g. aborted by the bucket's lifecycle rule — or a part
    that differs from S3's record) is discarded first: its uploads are aborted and the
    checkpoint deleted, so nothing torn or half-known is ever continued.
``range``
    An uncompressed file (``compression`` ``none``, declared or detected), a zstd file
    whose frames all state their content size, or a gzip file of several members, with
    a resume point: the download continues with ``Range``/``If-Range`` at the point's
    offset (the end of the last whole part; for zstd/gzip the start of the frame/member
    holding it, whose output up to that part's end is decoded again and dropped), the
    sha256 states and the validator are restored, and uploading continues with the next
    part of the same multipart upload. If the source answers that it changed, or the
    decoder fails after a frame/member start, the job fails with
    :class:`ResumeDiscarded` (retryable) after discarding the checkpoint, and the next
    delivery starts clean. A tar without outer compression with an ``archive`` point
    continues likewise at the header of an entry: the objects before it are committed
    from their uploads (:meth:`Resumer.finished`), the rest of the tar is read again
    from there.
``parts``
    Any other format (single-member gzip, single-frame zstd, zip, a compressed tar) or
    no resume point: the source is read from its start again, but every part whose content
    matches the checkpoint (size, MD5 = the part's ETag, and the S3 checksum) is taken
    from the earlier upload instead of being uploaded again.

Part boundaries are deterministic (a fixed part size over a deterministic byte
stream), so the same part number always holds the same bytes; two attempts writing
the same part write the same content, and S3 refuses a completion whose listed ETags
do not match what it holds.

During the attempt, :class:`Resumer` is the :class:`~exportpipe.worker.upload.Uploader`
observer and feeds a :class:`~exportpipe.worker.checkpoint.Checkpointer`.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Literal

from botocore.exceptions import ClientError

from exportpipe.common.errors import (
    ArchiveRejected,
    ExportPipeError,
    IntegrityError,
    RetryableError,
)
from exportpipe.common.layout import FileKeys
from exportpipe.common.retry import aws_error_code, call_aws_pages
from exportpipe.common.schemas import DownloadJob
from exportpipe.worker import sha256state
from exportpipe.worker.checkpoint import (
    ArchivePoint,
    Checkpoint,
    Checkpointer,
    CheckpointPart,
    CheckpointStore,
    MemberCheckpoint,
    SourceIdentity,
)
from exportpipe.worker.download import Readable, Source
from exportpipe.worker.extract import Member, TarEntry, classified, iter_members, zstd_reader
from exportpipe.worker.gzipmembers import GzipMembers
from exportpipe.worker.reentry import HashTrail, ReentryLog
from exportpipe.worker.settings import WorkerSettings
from exportpipe.worker.upload import ObjectUpload, PartRecord, Uploader, abort_if_open
from exportpipe.worker.zstdframes import FrameTracker

__all__ = ["ResumeDiscarded", "Resumer"]

Mode = Literal["fresh", "range", "parts"]
_READ = 1 << 20
# What a decoder started at a wrong frame/member start fails with (extract.py's names).
_DECODE_REASONS = frozenset(("corrupt_compressed_data", "trailing_garbage", "corrupt_archive"))


class ResumeDiscarded(RetryableError):
    """The checkpoint could not be continued (the source changed); the next try starts clean."""

    reason = "resume_discarded"


def list_parts(s3: Any, bucket: str, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
    """``{part number: (ETag, size)}`` of an open upload; ``None`` if it is gone."""
    pages = call_aws_pages(s3, "list_parts", Bucket=bucket, Key=key, UploadId=upload_id)
    try:
        return {
            int(part["PartNumber"]): (str(part["ETag"]), int(part["Size"]))
            for page in pages
            for part in page.get("Parts", [])
        }
    except ClientError as exc:
        if aws_error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
            return None
        raise


def _content_checksum(algorithm: str, body: bytearray) -> str | None:
    """The S3 checksum of ``body`` (base64), for the algorithms computable here."""
    if algorithm == "CRC32":
        return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode("ascii")
    if algorithm == "SHA256":
        return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return None


def part_matches(part: CheckpointPart, body: bytearray, algorithm: str) -> bool:
    """True if ``body`` is the content of the uploaded ``part``.

    Compares the size, the MD5 (S3's ETag of a part, unless the bucket encrypts with
    KMS) and the S3 checksum; at least one content hash must be comparable.
    """
    if part.size != len(body):
        return False
    compared = False
    etag = part.etag.strip('"')
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        if hashlib.md5(body).hexdigest() != etag.lower():  # noqa: S324 - S3's ETag
            return False
        compared = True
    if part.checksum is not None:
        mine = _content_checksum(algorithm, body)
        if mine is not None:
            if mine != part.checksum:
                return False
            compared = True
    return compared


class _Skip:
    """Drops the first ``count`` bytes of a stream (output already in earlier parts)."""

    def __init__(self, inner: Any, count: int) -> None:
        self._inner = inner
        self._left = count

    def read(self, size: int = -1, /) -> bytes:
        while self._left:
            data = self._inner.read(min(self._left, _READ))
            if not data:
                return b""
            self._left -= len(data)
        return bytes(self._inner.read(size))


class _Capped:
    """An uncompressed member read straight from the source, with the output size cap."""

    def __init__(self, inner: Readable, start: int, cap: int) -> None:
        self._inner = inner
        self._total = start
        self._cap = cap

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self._total += len(data)
        if self._total > self._cap:
            raise ArchiveRejected(
                f"uncompressed output exceeds the {self._cap} byte limit",
                reason="output_too_large",
            )
        return data


class Resumer:
    """One attempt's view of its checkpoint: what to continue and what to record.

    Attributes:
        mode: ``fresh``, ``range`` or ``parts`` (see the module docstring).
        offset: the source offset this attempt starts reading at (0 unless ``range``).
        parts_reused: parts taken from an earlier attempt instead of uploaded.
    """

    def __init__(
        self,
        *,
        s3: Any,
        job: DownloadJob,
        keys: FileKeys,
        settings: WorkerSettings,
        warn: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.s3 = s3
        self.job = job
        self.bucket = job.destination.bucket
        self.key = keys.checkpoint
        # A checkpoint may only continue uploads of this file's own members.
        self._data_prefix = keys.data_prefix
        self.store = CheckpointStore(s3, self.bucket)
        self._part_size = settings.part_size_bytes
        self._algorithm = settings.checksum_algorithm
        self._max_output = settings.max_total_output_bytes
        self._warn = warn
        self.enabled = settings.resume
        self.mode: Mode = "fresh"
        self.offset = 0
        self.parts_reused = 0
        self._members: dict[str, MemberCheckpoint] = {}
        self._checkpoint: Checkpoint | None = None
        # zstd frame / gzip member starts, by compression (a fresh attempt)
        self._starts: dict[str, ReentryLog] = {}
        # The compression of a file that is one decoded stream (None: an archive).
        self._compression: str | None = None
        self._trail: HashTrail | None = None  # source sha256 at tar entries
        self._archive: ArchivePoint | None = None  # the tar entry a range resume is at
        self._source: Source | None = None
        self._extract = partial(
            iter_members,
            compression=job.compression,
            file_name=job.file_name,
            limits=settings.extract_limits,
        )
        self.checkpointer = Checkpointer(
            self.store,
            self.key,
            job_id=job.job_id,
            file_id=job.file_id,
            part_size=self._part_size,
            checksum_algorithm=self._algorithm,
            source=SourceIdentity(job.size_bytes, job.sha256, None, job.compression),
            interval=settings.checkpoint_seconds if self.enabled else float("inf"),
        )

    # -- before streaming ---------------------------------------------------------

    def prepare(self) -> None:
        """Read and verify the checkpoint; choose the mode (discarding a bad checkpoint)."""
        if not self.enabled:
            return
        checkpoint = self.store.read(self.key)
        if checkpoint is None:
            return
        why = (
            self._mismatch(checkpoint)
            or self._inconsistent_resume(checkpoint)
            or self._inconsistent_archive(checkpoint)
        )
        if why is None:
            why = self._verify_uploads(checkpoint)
        if why is not None:
            self.discard(checkpoint, why)
            return
        self._checkpoint = checkpoint
        self._members = {m.key: m for m in checkpoint.members}
        resume = checkpoint.resume
        ranged_source = (
            bool(checkpoint.source.validator)
            and self.job.url.lower().startswith(("http://", "https://"))
            and sha256state.available()
        )
        archive = checkpoint.archive
        if archive is not None and ranged_source and resume is None:
            self.mode, self.offset, self._archive = "range", archive.offset, archive
        elif (
            resume is not None
            and len(checkpoint.members) == 1
            and checkpoint.members[0].key == self._data_prefix + checkpoint.members[0].path
            and checkpoint.source.compression in ("none", "zstd", "gzip")
            and (resume.frame_output is None) == (checkpoint.source.compression == "none")
            and ranged_source
        ):
            self.mode, self.offset = "range", resume.offset
        else:
            self.mode = "parts"
        for m in checkpoint.members:
            self.checkpointer.member(m.path, m.key, m.upload_id)
            self.checkpointer.seed(m.key, m.parts, resume if self.mode == "range" else None)
        self.checkpointer.source = checkpoint.source
        if self._archive is not None:
            self._resume_archive(self._archive)

    def _mismatch(self, cp: Checkpoint) -> str | None:
        job = self.job
        if cp.file_id != job.file_id or not all(
            m.key.startswith(self._data_prefix) for m in cp.members
        ):
            return "another file"
        if (cp.source.size, cp.source.sha256) != (job.size_bytes, job.sha256):
            return "another source (size or sha256 differ)"
        if job.compression is not None and cp.source.compression not in (None, job.compression):
            return "another compression"
        if (cp.part_size, cp.checksum_algorithm) != (self._part_size, self._algorithm):
            return "another part size or checksum algorithm"
        return None

    def _resume_archive(self, archive: ArchivePoint) -> None:
        """Continue a plain tar at the checkpoint's entry (``range``; uploads seeded)."""
        ckp = self.checkpointer
        ckp.archive = True
        for done in archive.finished:
            parts = len(self._members[done.key].parts)
            ckp.closed(done.key, parts, done.size, done.records, done.output_hash)
            ckp.order.append(done.key)
        # Until a later entry qualifies, this one is where a next attempt resumes too.
        ckp.entry(archive.offset, archive.source_hash, frozenset(archive.seen), archive.entries)

    def _inconsistent_archive(self, cp: Checkpoint) -> str | None:
        """Why the checkpoint's tar entry cannot be resumed at (``None``: it can)."""
        archive = cp.archive
        if archive is None:
            return None
        members = {m.key: m for m in cp.members}
        if cp.source.compression != "tar" or cp.resume is not None:
            return "tar resume point on a file that is not a plain tar"
        try:
            if int(archive.source_hash["length"]) != archive.offset:
                return "tar resume point inconsistent with its hash state"
            for done in archive.finished:
                m = members.get(done.key)
                numbers = sorted(p.number for p in m.parts) if m is not None else []
                if (
                    m is None
                    or numbers != list(range(1, len(numbers) + 1))
                    or sum(p.size for p in m.parts) != done.size
                    or int(done.output_hash["length"]) != done.size
                ):
                    return f"finished object {done.key} is not whole in its upload"
        except (KeyError, TypeError, ValueError):
            return "tar resume point with an unreadable hash state"
        return None

    def _inconsistent_resume(self, cp: Checkpoint) -> str | None:
        """Why the checkpoint's resume point cannot be where it says (``None``: it can).

        The saved sha256 states count the bytes they hashed: the source's must stop at
        the resume offset and the output's at the end of the resume point's part, and
        a frame/member start must lie at or before that end.
        """
        resume = cp.resume
        if resume is None:
            return None
        done = resume.part * cp.part_size
        try:
            consistent = (
                resume.part >= 1
                and int(resume.source_hash["length"]) == resume.offset
                and int(resume.output_hash["length"]) == done
                and (resume.frame_output is None or 0 <= resume.frame_output <= done)
                and (resume.frame_output is not None or resume.offset == done)
            )
        except (KeyError, TypeError, ValueError):
            consistent = False
        return None if consistent else "resume point inconsistent with its hash states"

    def _verify_uploads(self, cp: Checkpoint) -> str | None:
        for m in cp.members:
            listed = list_parts(self.s3, self.bucket, m.key, m.upload_id)
            if listed is None:
                return f"upload of {m.path} is gone (aborted or completed)"
            for p in m.parts:
                if listed.get(p.number) != (p.etag, p.size):
                    return f"part {p.number} of {m.path} differs from S3's record"
        # Parts S3 holds beyond the checkpoint (uploaded after its last write) are
        # simply uploaded again with the same content.
        return None

    def discard(self, checkpoint: Checkpoint | None, why: str) -> None:
        """Abort the checkpoint's uploads and delete it."""
        self._warn("checkpoint discarded", {"reason": why, "key": self.key})
        for m in checkpoint.members if checkpoint is not None else []:
            if m.key.startswith(self._data_prefix):  # never touch another file's uploads
                abort_if_open(self.s3, self.bucket, m.key, m.upload_id)
        self.store.delete(self.key)
        self.mode, self.offset, self._members, self._checkpoint = "fresh", 0, {}, None

    # -- hooks while streaming ----------------------------------------------------

    def attach(self, uploader: Uploader) -> None:
        """Become ``uploader``'s observer (when resume is on)."""
        if self.enabled:
            uploader.observer = self

    def prepare_source(self, source: Source) -> None:
        """In ``range`` mode, make the source start at the resume offset."""
        self._source = source
        if self.mode != "range" or self._checkpoint is None:
            return
        point = self._archive or self._checkpoint.resume
        assert point is not None  # noqa: S101 - range mode is only chosen with one
        source.start_at(
            point.offset,
            hasher=sha256state.ResumableSha256(point.source_hash),
            validator=self._checkpoint.source.validator,
        )

    def members(self, prefetch: Readable) -> Iterator[Member]:
        """The members to stream: extracted (:func:`~exportpipe.worker.extract.iter_members`),
        or (``range``) the resumed ones."""
        archive = self._archive
        if archive is not None:
            # A plain tar read again from an entry's header.
            self._trail = HashTrail(
                prefetch,
                offset=archive.offset,
                hasher=sha256state.ResumableSha256(archive.source_hash),
            )
            entry = TarEntry(archive.offset, frozenset(archive.seen), archive.entries)
            for member in self._extract(self._trail, tar=entry):
                self._note_entry(member)
                yield member
            return
        if self.mode == "range" and self._checkpoint is not None:
            yield self._resumed_member(prefetch, self._checkpoint)
            return
        inner: Readable = prefetch
        usable = self.enabled and sha256state.available()
        if usable and self.job.compression in (None, "zstd"):
            self._starts["zstd"] = ReentryLog(spacing=self._part_size)
            inner = FrameTracker(prefetch, log=self._starts["zstd"])
        if usable and self.job.compression in (None, "gzip"):
            self._starts["gzip"] = ReentryLog(spacing=self._part_size)
        if usable and self.job.compression in (None, "tar"):
            self._trail = HashTrail(inner)
            inner = self._trail
        for member in self._extract(inner, starts=self._starts.get("gzip")):
            self._compression = member.compression
            self._note_entry(member)
            yield member

    def _note_entry(self, member: Member) -> None:
        """A plain tar's member: the next attempt may read again from its entry."""
        trail = self._trail
        if trail is None or not trail.active:
            return
        validator = self._source.validator if self._source is not None else None
        ckp = self.checkpointer
        if member.reentry is None or validator is None or ckp.blocked:
            # Not a plain tar, or no later entry can be a resume point.
            trail.stop()
            return
        entry = member.reentry()
        state = trail.state_at(entry.offset)
        if state is None:
            trail.stop()
            return
        if not ckp.archive:
            ckp.archive = True
            ckp.source = SourceIdentity(self.job.size_bytes, self.job.sha256, validator, "tar")
        ckp.entry(entry.offset, state, entry.seen, entry.entries)

    def _resumed_member(self, prefetch: Readable, checkpoint: Checkpoint) -> Member:
        """The checkpoint's one member, continued from its resume point."""
        only = checkpoint.members[0]
        resume = checkpoint.resume
        assert resume is not None  # noqa: S101 - range mode is only chosen with one
        done = resume.part * self._part_size
        if resume.frame_output is None:
            return Member(path=only.path, stream=_Capped(prefetch, done, self._max_output))
        # Decoding starts afresh at the frame/member start; the output it gives again
        # up to the end of the last whole part is dropped.
        log = ReentryLog(
            offset=resume.offset,
            hasher=sha256state.ResumableSha256(resume.source_hash),
            spacing=self._part_size,
        )
        decoder: Any
        if checkpoint.source.compression == "gzip":
            decoder = GzipMembers(prefetch, log=log, output=resume.frame_output)
        else:
            decoder = zstd_reader(FrameTracker(prefetch, output=resume.frame_output, log=log))
        self.checkpointer.starts = log
        decoded = _Skip(classified(decoder, what=only.path), done - resume.frame_output)
        return Member(path=only.path, stream=_Capped(decoded, done, self._max_output))

    def open(self, uploader: Uploader, key: str, path: str, *, content_type: str) -> ObjectUpload:
        """The upload for ``key``: the checkpoint's (continued or re-fed) or a new one."""
        known = self._members.get(key)
        if self.checkpointer.archive:
            # A tar's object: re-fed from its first byte (its checkpointed parts are
            # reused by content), hashed so its end state can be checkpointed.
            obj = self._attach_or_open(uploader, key, path, content_type=content_type)
            self.checkpointer.order.append(key)
            obj.hash_with(sha256state.ResumableSha256())
            return obj
        if known is not None and self.mode == "range" and self._checkpoint is not None:
            resume = self._checkpoint.resume
            assert resume is not None  # noqa: S101
            self.checkpointer.ranged = True
            done = resume.part * self._part_size
            return uploader.attach(
                key,
                known.upload_id,
                parts=[
                    PartRecord(p.number, p.etag, p.checksum)
                    for p in known.parts
                    if p.number <= resume.part
                ],
                size=done,
                hasher=sha256state.ResumableSha256(resume.output_hash),
            )
        if self.mode == "range":
            # Continuing a read mid-file into anything but the checkpoint's own upload
            # would commit a torn object.
            raise RuntimeError(f"ranged resume of {key!r}, which the checkpoint does not name")
        obj = self._attach_or_open(uploader, key, path, content_type=content_type)
        if self._fresh_resumable():
            # A resume point needs the output's sha256 state at part boundaries.
            self.checkpointer.ranged = True
            obj.hash_with(sha256state.ResumableSha256())
        return obj

    def _attach_or_open(
        self, uploader: Uploader, key: str, path: str, *, content_type: str
    ) -> ObjectUpload:
        """The checkpoint's upload of ``key`` (its parts reused by content) or a new one."""
        known = self._members.get(key)
        if known is not None:
            return uploader.attach(key, known.upload_id)
        # A new object has no multipart upload until it outgrows one part; the
        # checkpoint learns its upload id then (upload_created).
        obj = uploader.open(key, content_type=content_type)
        self.checkpointer.member(path, key, obj.upload_id)
        return obj

    def _fresh_resumable(self) -> bool:
        if not self.enabled or self.mode == "range" or not sha256state.available():
            return False
        compression = self._compression
        if self.checkpointer.member_count() != 1 or compression is None:
            self.checkpointer.ranged = False
            self._give_up()
            return False
        validator = self._source.validator if self._source is not None else None
        self.checkpointer.source = SourceIdentity(
            self.job.size_bytes, self.job.sha256, validator, compression
        )
        log = self._starts.get(compression)
        if validator is None or (compression != "none" and (log is None or not log.usable)):
            self._give_up()
            return False
        self.checkpointer.starts = log
        return True

    def _give_up(self) -> None:
        """No resume point will be recorded: stop keeping frame/member starts."""
        for log in self._starts.values():
            log.give_up()

    def doubts(self, exc: ExportPipeError) -> bool:
        """True if ``exc``, met while resuming, may be the resume's fault, not the file's.

        A changed source fails its size/sha256 checks; a wrong frame/member start makes
        the decoder fail. Either way the checkpoint is discarded and a clean attempt
        judges the file (:class:`ResumeDiscarded`), rather than refusing it now.
        """
        if self.mode != "range" or self._checkpoint is None:
            return False
        if isinstance(exc, IntegrityError):
            return exc.reason != "manifest_conflict"
        resume = self._checkpoint.resume
        restarted = self._archive is not None or (
            resume is not None and resume.frame_output is not None
        )
        return isinstance(exc, ArchiveRejected) and restarted and exc.reason in _DECODE_REASONS

    def closed(self, obj: ObjectUpload, records: int | None) -> None:
        """``obj`` got all its bytes (a tar's next entry may become a resume point)."""
        if self.checkpointer.archive:
            parts = 0 if obj.single else obj.part_count
            self.checkpointer.closed(obj.key, parts, obj.size, records)

    def finished(self, uploader: Uploader) -> list[tuple[ObjectUpload, int | None, str]]:
        """The objects an earlier attempt wrote whole (a tar resumed at an entry)."""
        out: list[tuple[ObjectUpload, int | None, str]] = []
        for done in self._archive.finished if self._archive is not None else []:
            known = self._members[done.key]
            obj = uploader.attach(
                done.key,
                known.upload_id,
                parts=[PartRecord(p.number, p.etag, p.checksum) for p in known.parts],
                size=done.size,
                hasher=sha256state.ResumableSha256(done.output_hash),
            )
            obj.close()
            out.append((obj, done.records, known.path))
        return out

    def restore(self, obj: ObjectUpload, validator: Any) -> None:
        """In ``range`` mode, put the content validator back in its saved state."""
        if self.mode == "range" and self._checkpoint is not None and self._archive is None:
            resume = self._checkpoint.resume
            assert resume is not None  # noqa: S101
            validator.restore_state(resume.validator)

    def read_size(self, obj: ObjectUpload) -> int:
        """How much to read next: never across a part boundary while recording resume points."""
        if not self.checkpointer.ranged:
            return _READ
        return min(_READ, self._part_size - obj.size % self._part_size)

    def after_write(self, obj: ObjectUpload, validator: Any) -> None:
        """Record a part boundary just reached; write the checkpoint if it is due."""
        if self.checkpointer.ranged and obj.size and obj.size % self._part_size == 0:
            self.checkpointer.boundary(obj.key, obj.size // self._part_size, obj.size, validator)
        self._maybe_write()

    # -- the Uploader's observer ----------------------------------------------------

    def reuse(self, key: str, number: int, body: bytearray) -> PartRecord | None:
        """A checkpointed part with exactly ``body``'s content (``parts`` mode)."""
        known = self._members.get(key)
        if known is None or (self.mode != "parts" and self._archive is None):
            return None
        part = next((p for p in known.parts if p.number == number), None)
        if part is None or not part_matches(part, body, self._algorithm):
            return None
        self.parts_reused += 1
        self.checkpointer.part_uploaded(key, part)
        return PartRecord(part.number, part.etag, part.checksum)

    def upload_created(self, key: str, upload_id: str) -> None:
        """Record the multipart upload a new object just opened."""
        self.checkpointer.upload_created(key, upload_id)

    def part_uploaded(self, key: str, record: PartRecord, size: int) -> None:
        """Record an uploaded part (and write the checkpoint if it is due)."""
        self.checkpointer.part_uploaded(
            key, CheckpointPart(record.number, record.etag, record.checksum, size)
        )
        self._maybe_write()

    def _maybe_write(self) -> None:
        try:
            self.checkpointer.maybe_write()
        except Exception as exc:  # a checkpoint is an optimisation: the job goes on
            self._warn("checkpoint not written", {"error": type(exc).__name__})

    def part_hashed(self, key: str, number: int, state: dict[str, Any]) -> None:
        """Record the output's sha256 state after a part."""
        self.checkpointer.part_hashed(key, number, state)

    # -- endings --------------------------------------------------------------------

    def keep(self, uploader: Uploader, *, settle_seconds: float) -> bool:
        """On a release: let parts land, write the checkpoint; True if the uploads stay open.

        False (the caller aborts) when nothing worth keeping was uploaded or the
        checkpoint could not be written.
        """
        if not self.enabled:
            return False
        uploader.settle(settle_seconds)
        snapshot = self.checkpointer.snapshot()
        if not any(m.parts for m in snapshot.members):
            self._forget()
            return False
        try:
            self.checkpointer.write()
        except Exception as exc:
            self._warn("checkpoint not written", {"error": type(exc).__name__})
            self._forget()
            return False
        return True

    def _forget(self) -> None:
        """Delete a checkpoint whose uploads the caller is about to abort."""
        if self.checkpointer.written or self._checkpoint is not None:
            try:
                self.store.delete(self.key)
            except Exception as exc:
                self._warn("checkpoint not deleted", {"error": type(exc).__name__})
