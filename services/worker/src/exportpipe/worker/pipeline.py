"""One download job, end to end: idempotency check, stream, verify, commit, manifest.

A job for file ``file_id`` writes its members under ``data/{file_id}/``, then its
commit marker ``manifests/{file_id}.json`` (or, when refused, ``rejected/{file_id}.json``)
under its export's root; :mod:`exportpipe.common.layout` owns those keys and records.
The destination must be the job's own export's root
(:func:`~exportpipe.common.layout.is_export_root`) and every key must fit S3's 1,024
bytes; anything else is refused before any write.

The sequence:

1. If the manifest exists and describes the same source (sha256 and size, as far as the
   job states them), the job is a duplicate: acknowledge it without work. A first
   delivery of a file whose listed size fits one part skips this read; a commit that
   finds its key taken reads the manifest then, and such a delivery never replaces an
   object it finds (ADR 0015).
2. Stream download → decompress/extract → validate → multipart upload through bounded
   buffers (a download thread, this thread, a pool of part uploaders).
3. Read the source to its end so the size/sha256 checks run; only then commit each
   member with ``If-None-Match: *`` and write the manifest, also conditionally.
4. On any failure, abort every multipart upload; a permanent failure also writes the
   rejection record. Nothing under ``data/`` is committed before step 3, so a refused
   file leaves nothing behind.

Housekeeping -- listing and aborting multipart uploads other attempts left under
``data/F/``, removing an old rejection record -- costs requests on every file, so it
runs only when there is a reason to expect leftovers: the delivery is a redelivery (the
caller says so, from ``ApproximateReceiveCount`` or a dead letter's attributes), the
manifest already existed, a commit found the key already written by another attempt,
or (for a refused file) this attempt opened a multipart upload whose create response
may have been lost.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import (
    ArchiveRejected,
    ExportPipeError,
    IntegrityError,
    JobReleased,
    MalformedMessage,
    PermanentError,
    RetryableError,
    UnsafeSource,
)
from exportpipe.common.layout import (
    S3_MAX_KEY_BYTES,
    ExportKeys,
    FileKeys,
    FileManifest,
    FileRejection,
    ManifestMember,
    SourceRef,
    is_export_root,
)
from exportpipe.common.observability import redact_url
from exportpipe.common.retry import call_aws, get_object_or_none
from exportpipe.common.schemas import DownloadJob
from exportpipe.worker.download import Prefetcher, open_source
from exportpipe.worker.politeness import HostPoliteness
from exportpipe.worker.resume import ResumeDiscarded, Resumer
from exportpipe.worker.safety import AddressGuard, pinned_pool_manager
from exportpipe.worker.settings import WorkerSettings
from exportpipe.worker.upload import CommitConflict, ObjectUpload, Uploader, abort_uploads_under
from exportpipe.worker.validate import validator_for

__all__ = ["JobResult", "MemberResult", "Pipeline", "keys_for"]

_READ = 1 << 20
_CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}


def keys_for(job: DownloadJob) -> FileKeys:
    """The keys ``job`` writes under its destination (:mod:`exportpipe.common.layout`).

    Raises:
        MalformedMessage: the destination prefix is not a safe relative prefix, or a key
            would pass S3's 1,024-byte limit.
    """
    try:
        keys = ExportKeys.at(job.destination.prefix).file(job.file_id)
    except ValueError:
        raise MalformedMessage(
            f"destination prefix {job.destination.prefix!r} is not a relative key prefix",
            reason="bad_destination",
        ) from None
    for key in (keys.manifest, keys.rejected, keys.data_prefix):
        if len(key.encode()) > S3_MAX_KEY_BYTES:
            raise MalformedMessage(
                f"key {key[:80]!r}... is longer than S3's {S3_MAX_KEY_BYTES} bytes",
                reason="key_too_long",
            )
    return keys


def _member_key(keys: FileKeys, path: str) -> str:
    """The key of archive member ``path``.

    Raises:
        ArchiveRejected: the key would pass S3's 1,024-byte limit (``key_too_long``);
            raised before anything of the file is uploaded.
    """
    key = keys.member(path)
    if len(key.encode()) > S3_MAX_KEY_BYTES:
        raise ArchiveRejected(
            f"member {path[:80]!r}...: its key would be {len(key.encode())} bytes, over "
            f"S3's {S3_MAX_KEY_BYTES}",
            reason="key_too_long",
        )
    return key


MemberResult = ManifestMember  # one committed output object, as its manifest records it


@dataclass
class JobResult:
    """What a job did.

    Attributes:
        status: ``"done"`` (committed now) or ``"duplicate"`` (already committed).
        manifest_key: the manifest's key.
        source_bytes: compressed bytes downloaded.
        members: the committed members (empty for a duplicate).
    """

    status: Literal["done", "duplicate"]
    manifest_key: str
    source_bytes: int = 0
    members: list[MemberResult] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0  # source offset a ranged resume started at (ADR 0020)
    parts_reused: int = 0  # parts an earlier attempt had uploaded, not uploaded again
    complete_seconds: float = 0.0  # in CompleteMultipartUpload (S3 assembling objects)

    @property
    def output_bytes(self) -> int:
        """Uncompressed bytes committed."""
        return sum(m.size for m in self.members)

    @property
    def records(self) -> int:
        """Records validated across members (0 for binary content)."""
        return sum(m.records or 0 for m in self.members)


class Pipeline:
    """Runs download jobs with shared connection pools (thread-safe across jobs)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        s3: Any,
        logger: Any = None,
    ) -> None:
        self.settings = settings
        self.s3 = s3
        self.guard = AddressGuard(settings.download_allowed_hosts)
        self.manager = pinned_pool_manager(
            self.guard, num_pools=16, maxsize=max(settings.concurrency, 2)
        )
        self._log = logger
        # One per process: every job's downloads share the per-host slots and pauses.
        self.politeness = HostPoliteness(max_per_host=settings.max_downloads_per_host)
        self.download = settings.download
        self.upload = settings.upload

    # -- helpers ------------------------------------------------------------

    def _warn(self, message: str, extra: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.warning(message, extra=extra)

    def _read_manifest(self, bucket: str, key: str) -> FileManifest | None:
        """The stored manifest, or ``None`` if there is none.

        Raises:
            IntegrityError: something unreadable sits where the manifest belongs.
        """
        body = get_object_or_none(self.s3, bucket, key)
        if body is None:
            return None
        try:
            return FileManifest.from_json(body)
        except ValueError as exc:
            raise IntegrityError(
                f"{key} is not a readable file manifest ({exc}); remove it to re-import",
                reason="manifest_conflict",
            ) from None

    def _check_destination(self, job: DownloadJob) -> None:
        if job.destination.bucket != self.settings.bucket:
            raise MalformedMessage(
                f"destination bucket {job.destination.bucket!r} is not this worker's bucket "
                f"({self.settings.bucket!r})",
                reason="destination_not_allowed",
            )
        if not job.destination.prefix.startswith(self.settings.output_prefix):
            # The task role may only write under the output prefix (least privilege).
            raise MalformedMessage(
                f"destination prefix {job.destination.prefix!r} is outside the output prefix "
                f"{self.settings.output_prefix!r}",
                reason="destination_not_allowed",
            )

    def _check_export_root(self, job: DownloadJob) -> None:
        if not is_export_root(
            job.destination.prefix, job.export_id, output_prefix=self.settings.output_prefix
        ):
            # Another export's folder: writing there would mix two exports' files (and
            # no rejection record is written there either).
            raise MalformedMessage(
                f"destination prefix {job.destination.prefix!r} is not export "
                f"{job.export_id!r}'s own folder ('<prefix>{job.export_id}/')",
                reason="destination_not_export_folder",
            )

    # -- the job --------------------------------------------------------------

    def run(
        self,
        job: DownloadJob,
        *,
        cancel: CancelToken | None = None,
        set_eta: Callable[[float | None], None] | None = None,
        redelivered: bool = True,
    ) -> JobResult:
        """Run ``job`` to a committed manifest, or raise why not.

        Args:
            job: the job.
            cancel: the job's token; once cancelled, the job stops at its next check
                and raises the token's reason (a deadline is a permanent failure with
                a rejection record; a release is retryable and records nothing).
            set_eta: told the expected remaining seconds now and then.
            redelivered: an earlier attempt of this job may have run (it may have left
                uploads or a rejection record); ``False`` skips the housekeeping that
                looks for them unless something found during the run says otherwise.

        Raises:
            PermanentError: the file was refused (a rejection record was written).
            RetryableError: try again later (nothing was committed, uploads aborted).
        """
        started = time.monotonic()
        self._check_destination(job)
        keys = keys_for(job)  # a prefix with ".." is refused here, as bad_destination
        self._check_export_root(job)
        bucket = job.destination.bucket
        # A first delivery of a file that fits one part skips the manifest read (ADR
        # 0015): a duplicate is rare there and is found at its commit instead, for the
        # price of re-reading one small file.
        fits_one_part = job.size_bytes is not None and job.size_bytes <= self.upload.part_size
        checked = redelivered or not fits_one_part
        if checked:
            existing = self._read_manifest(bucket, keys.manifest)
            if existing is not None:
                return self._duplicate(job, keys, existing, started)
        cancel = cancel or CancelToken()
        # resume hook (ADR 0020): continue an earlier attempt's checkpoint, keep ours.
        # A first delivery has no earlier attempt, so no checkpoint to read.
        resumer = Resumer(s3=self.s3, job=job, keys=keys, settings=self.settings, warn=self._warn)
        if redelivered:
            resumer.prepare()
        uploader = Uploader(
            self.s3,
            bucket,
            # Unchecked, an object already at a key may belong to a committed file:
            # never replace it here; a redelivery reads the manifest first and may.
            tuning=self.upload
            if checked
            else dataclasses.replace(self.upload, stale_commit_seconds=math.inf),
            cancel=cancel,
            on_warning=self._warn,
        )
        resumer.attach(uploader)
        try:
            result = self._stream_and_commit(
                job=job,
                keys=keys,
                uploader=uploader,
                cancel=cancel,
                set_eta=set_eta,
                started=started,
                resumer=resumer,
                redelivered=redelivered,
                checked=checked,
            )
        except _Committed as found:
            # What the skipped manifest read would have found, with the same outcome.
            uploader.abort_all()
            return self._duplicate(job, keys, found.manifest, started)
        except PermanentError as exc:
            uploader.abort_all()
            # Only an IntegrityError or ArchiveRejected met while resuming is doubted.
            if not resumer.doubts(exc):
                # Nothing ever commits a refused file, so nothing else would clear uploads
                # this attempt never learnt about (a CreateMultipartUpload whose response
                # was lost, an earlier attempt that was killed): abort them here, when an
                # earlier attempt may have run or this one opened a multipart upload.
                if redelivered or resumer.mode != "fresh" or uploader.opened_multipart:
                    self._abort_leftovers(job, keys)
                self._reject(job, keys, exc)
                raise
            # A resumed read cannot tell a changed source (or a bad resume point) from a
            # bad file: start clean, and let a whole read judge the file.
            resumer.discard(None, f"resumed source failed its checks ({exc.reason})")
            raise ResumeDiscarded(
                "the source changed since the checkpoint; the next attempt starts clean"
            ) from exc
        except Exception as exc:
            # resume hook (ADR 0020): a released or transiently failed attempt keeps its
            # uploads open under a checkpoint for the next delivery to continue.
            kept = (
                isinstance(exc, RetryableError)  # JobReleased included
                and not isinstance(exc, CommitConflict)
                and resumer.keep(uploader, settle_seconds=self.settings.release_settle_seconds)
            )
            if not kept:
                uploader.abort_all()
            if isinstance(exc, JobReleased):
                raise
            duplicate = self._committed_meanwhile(job, keys, started, checked=checked)
            if duplicate is not None:
                return duplicate
            raise
        except BaseException:
            uploader.abort_all()
            raise
        finally:
            uploader.close()
        return result

    def _committed_meanwhile(
        self, job: DownloadJob, keys: FileKeys, started: float, *, checked: bool = True
    ) -> JobResult | None:
        """After a failed attempt: a duplicate's result if a concurrent attempt committed
        the same source meanwhile (and aborted our uploads), else ``None``.

        ``checked=False`` (the manifest read was skipped): any manifest found ends the
        job as that read would have -- a duplicate, or ``manifest_conflict`` (raised).
        """
        try:
            existing = self._read_manifest(job.destination.bucket, keys.manifest)
        except Exception:
            return None
        if existing is not None and (
            not checked or existing.same_source(size=job.size_bytes, sha256=job.sha256)
        ):
            return self._duplicate(job, keys, existing, started)
        return None

    def _duplicate(
        self, job: DownloadJob, keys: FileKeys, manifest: FileManifest, started: float
    ) -> JobResult:
        if not manifest.same_source(size=job.size_bytes, sha256=job.sha256):
            raise IntegrityError(
                f"{keys.manifest} already commits a different source (sha256/size differ); "
                "remove it to re-import this file",
                reason="manifest_conflict",
            )
        self._abort_leftovers(job, keys)
        return JobResult(
            status="duplicate",
            manifest_key=keys.manifest,
            source_bytes=manifest.source.size or 0,
            seconds=time.monotonic() - started,
        )

    def _abort_leftovers(self, job: DownloadJob, keys: FileKeys) -> None:
        """Abort every open multipart upload under the file's ``data/`` prefix."""
        try:
            abort_uploads_under(self.s3, job.destination.bucket, keys.data_prefix)
        except Exception as exc:  # leftovers only cost storage; a lifecycle rule ends them
            self._warn("could not abort leftover uploads", {"error": type(exc).__name__})
            return
        self._drop_checkpoint(job, keys)

    def _drop_checkpoint(self, job: DownloadJob, keys: FileKeys) -> None:
        """resume hook (ADR 0020): the file is settled, its checkpoint owns nothing."""
        try:
            call_aws(self.s3.delete_object, Bucket=job.destination.bucket, Key=keys.checkpoint)
        except Exception as exc:  # the next delivery finds the manifest and retries this
            self._warn("could not delete the checkpoint", {"error": type(exc).__name__})

    def _stream_and_commit(
        self,
        *,
        job: DownloadJob,
        keys: FileKeys,
        uploader: Uploader,
        cancel: CancelToken,
        set_eta: Callable[[float | None], None] | None,
        started: float,
        resumer: Resumer,
        redelivered: bool,
        checked: bool = True,
    ) -> JobResult:
        settings = self.settings
        parts = urlsplit(job.url)
        if parts.scheme.lower() == "s3" and parts.netloc not in settings.source_buckets:
            raise UnsafeSource(
                f"s3 source bucket {parts.netloc!r} is not in EXPORTPIPE_SOURCE_BUCKETS",
                reason="source_bucket_not_allowed",
            )
        source = open_source(
            job.url,
            manager=self.manager,
            guard=self.guard,
            s3_client_factory=lambda: self.s3,
            expected_size=job.size_bytes,
            expected_sha256=job.sha256,
            tuning=self.download,
            cancel=cancel,
            politeness=self.politeness,
        )
        resumer.prepare_source(source)
        prefetch = Prefetcher(
            source,
            chunk_size=self.download.chunk_bytes,
            depth=self.download.buffer_chunks,
            cancel=cancel,
        )
        # resume hook (ADR 0020): a tar resumed at an entry has its earlier objects whole.
        pending: list[tuple[ObjectUpload, int | None, str]] = resumer.finished(uploader)
        last_eta = 0.0
        try:
            for member in resumer.members(prefetch):
                cancel.check()
                obj = resumer.open(
                    uploader,
                    _member_key(keys, member.path),
                    member.path,
                    content_type=_CONTENT_TYPES.get(job.format, "application/octet-stream"),
                )
                validator = validator_for(
                    job.format, what=member.path, max_line_bytes=settings.max_line_bytes
                )
                resumer.restore(obj, validator)
                read, feed, write = member.stream.read, validator.feed, obj.write
                size, after_write = resumer.read_size, resumer.after_write
                while True:
                    chunk = read(size(obj))
                    if not chunk:
                        break
                    feed(chunk)
                    write(chunk)
                    after_write(obj, validator)
                    cancel.check()
                    now = time.monotonic()
                    if set_eta is not None and now - last_eta > 5:
                        last_eta = now
                        set_eta(self._eta(source.bytes_read, job.size_bytes, now - started))
                records = validator.finish()
                obj.close()
                resumer.closed(obj, records)
                pending.append((obj, records, member.path))
            # Everything is read and validated; the source checks run at its EOF.
            prefetch.finish()
        finally:
            prefetch.close()
        if not pending:
            raise ArchiveRejected(
                f"{job.file_name}: the archive has no files", reason="empty_archive"
            )
        if set_eta is not None:
            set_eta(30.0)
        members_out: list[MemberResult] = []
        for obj, records, path in pending:
            if obj.commit() != "created":
                redelivered = True  # another attempt wrote this key: it may have left more
                if not checked:
                    self._raise_if_committed(job, keys)
                    checked = True
            members_out.append(
                MemberResult(
                    path=path, key=obj.key, size=obj.size, sha256=obj.sha256, records=records
                )
            )
        manifest = self._manifest(job, source.bytes_read, source.sha256, members_out)
        if not uploader.put_if_absent(
            keys.manifest, manifest.to_json(), content_type="application/json"
        ):
            if not checked:
                self._raise_if_committed(job, keys)
            existing = self._read_manifest(job.destination.bucket, keys.manifest)
            if existing is None or existing.source.sha256 != source.sha256:
                raise IntegrityError(
                    f"{keys.manifest} was committed concurrently for a different source",
                    reason="manifest_conflict",
                )
            return self._duplicate(job, keys, existing, started)
        if redelivered:
            self._after_commit(job, keys, uploader)
        return JobResult(
            status="done",
            manifest_key=keys.manifest,
            source_bytes=source.bytes_read,
            members=members_out,
            seconds=time.monotonic() - started,
            resumed_from=resumer.offset,
            parts_reused=resumer.parts_reused,
            complete_seconds=uploader.complete_seconds,
        )

    def _raise_if_committed(self, job: DownloadJob, keys: FileKeys) -> None:
        """The read a first delivery skipped, once a commit found an earlier attempt.

        Raises:
            _Committed: the file's manifest exists (a duplicate, or a conflict).
        """
        existing = self._read_manifest(job.destination.bucket, keys.manifest)
        if existing is not None:
            raise _Committed(existing)

    @staticmethod
    def _eta(done: int, total: int | None, elapsed: float) -> float | None:
        if not total or done <= 0 or elapsed <= 0:
            return None
        return max(0.0, (total - done) / (done / elapsed)) + 30.0

    def _after_commit(self, job: DownloadJob, keys: FileKeys, uploader: Uploader) -> None:
        """Housekeeping once committed: other attempts' uploads, an old rejection."""
        try:
            uploader.abort_foreign_uploads(keys.data_prefix)
            call_aws(self.s3.delete_object, Bucket=job.destination.bucket, Key=keys.rejected)
        except Exception as exc:  # the commit stands; this only tidies up
            self._warn("post-commit cleanup failed", {"error": type(exc).__name__})
        self._drop_checkpoint(job, keys)

    @staticmethod
    def _manifest(
        job: DownloadJob, size: int, sha256: str, members: list[MemberResult]
    ) -> FileManifest:
        return FileManifest(
            job_id=job.job_id,
            export_id=job.export_id,
            file_id=job.file_id,
            file_name=job.file_name,
            format=job.format,
            compression=job.compression,
            source=SourceRef(url=redact_url(job.url), size=size, sha256=sha256),
            members=members,
        )

    def reject(self, job: DownloadJob, exc: ExportPipeError) -> None:
        """Write ``job``'s rejection record for ``exc`` (its last delivery failed).

        For a failure that is final although retryable (the runtime's last receive).
        """
        keys = keys_for(job)
        # resume hook (ADR 0020): a retryable failure kept its uploads under a
        # checkpoint; nothing will continue a refused file, so abort them now.
        self._abort_leftovers(job, keys)
        self._reject(job, keys, exc)

    def _reject(self, job: DownloadJob, keys: FileKeys, exc: ExportPipeError) -> None:
        record = FileRejection(
            job_id=job.job_id,
            export_id=job.export_id,
            file_id=job.file_id,
            file_name=job.file_name,
            source=SourceRef(url=redact_url(job.url)),
            error=type(exc).__name__,
            reason=exc.reason,
            message=exc.message,
        )
        try:
            call_aws(
                self.s3.put_object,
                Bucket=job.destination.bucket,
                Key=keys.rejected,
                Body=record.to_json(),
                ContentType="application/json",
            )
        except Exception as exc2:  # the dead letter still carries the reason
            self._warn("could not write the rejection record", {"error": type(exc2).__name__})


class _Committed(Exception):
    """A job that skipped the manifest read found the file committed (a signal inside
    the pipeline, never raised out of it)."""

    def __init__(self, manifest: FileManifest) -> None:
        super().__init__("the file is already committed")
        self.manifest = manifest
