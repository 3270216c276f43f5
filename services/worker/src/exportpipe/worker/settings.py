"""The worker's settings, loaded once at start-up from ``EXPORTPIPE_*`` variables.

Defaults are sized for the worker task of :data:`exportpipe.common.sizing.DEFAULT_DEPLOYMENT`
(2 vCPU / 4 GiB, 50 GiB ephemeral storage). Jobs are admitted by memory budget (ADR
0015): a job needs what :meth:`WorkerSettings.job_memory` says for its source's size --
at most ``(upload_parts_in_flight + 1) * part_size_bytes + download_buffer_chunks *
download_chunk_bytes`` plus an overhead, far less for a small file -- and the worker
runs jobs while their needs fit ``job_budget_bytes`` (four large jobs, or many small
ones, up to ``concurrency``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from exportpipe.common.settings import CommonSettings
from exportpipe.common.sizing import DEFAULT_DEPLOYMENT, JobMemory

__all__ = ["DownloadTuning", "ExtractLimits", "UploadTuning", "WorkerSettings"]

_MIB = 1024 * 1024
_JOBS = DEFAULT_DEPLOYMENT.jobs_queue
ChecksumAlgorithm = Literal["CRC32", "CRC32C", "SHA256"]


# The settings are passed to the data path in these groups, whole. Their defaults are
# the settings' defaults (each field below starts from them): one place for each value.


@dataclass(frozen=True, kw_only=True)
class DownloadTuning:
    """How a job reads its source (:class:`~exportpipe.worker.download.HttpSource`)."""

    max_redirects: int = 3
    attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_bytes: int = 1 * _MIB
    buffer_chunks: int = 8


@dataclass(frozen=True, kw_only=True)
class ExtractLimits:
    """The bounds extraction enforces (:func:`~exportpipe.worker.extract.iter_members`)."""

    max_members: int = 10_000
    max_total_output_bytes: int = 200 * 1024 * _MIB
    max_compression_ratio: float = 200.0
    ratio_check_after_bytes: int = 16 * _MIB
    spool_dir: Path | None = None
    max_spool_bytes: int = 10 * 1024 * _MIB


@dataclass(frozen=True, kw_only=True)
class UploadTuning:
    """How a job writes to S3 (:class:`~exportpipe.worker.upload.Uploader`)."""

    part_size: int = 16 * _MIB
    parts_in_flight: int = 4
    checksum_algorithm: ChecksumAlgorithm = "CRC32"
    stale_commit_seconds: float = 900.0


_DL, _EX, _UP = DownloadTuning(), ExtractLimits(), UploadTuning()


class WorkerSettings(CommonSettings):
    """Everything the worker reads from its environment.

    Attributes:
        jobs_queue_url: SQS 2, where ``DownloadJob`` messages arrive.
        jobs_dlq_url: SQS 2's dead-letter queue (permanent failures go there with reason).
        concurrency: the most jobs one process runs at once.
        job_budget_bytes: jobs are admitted while their memory needs fit this budget.
        download_allowed_hosts: when set (comma-separated), the only hosts downloads may
            reach, and the hosts allowed to resolve to private/loopback addresses. An
            entry starting with ``.`` matches every subdomain of it.
        max_redirects: redirect hops followed per request.
        connect_timeout_seconds / read_timeout_seconds: per-connection timeouts.
        download_attempts: tries per request (first request or a ``Range`` resume).
        download_chunk_bytes / download_buffer_chunks: read size and the bounded queue
            between the network and the decompressor.
        max_downloads_per_host: downloads this process runs against one host at once
            (every job of the process counts); a ``429``/``503`` with ``Retry-After``
            from a host also pauses that host for the whole process (see
            :mod:`exportpipe.worker.politeness`). The default is generous: it only
            binds above 16 concurrent jobs.
        max_members: archive members allowed in one file.
        max_total_output_bytes: cap on the uncompressed bytes of one file.
        max_compression_ratio / ratio_check_after_bytes: refuse output/input beyond the
            ratio once this much output was produced (zip bombs).
        max_line_bytes: longest JSONL line or CSV record accepted.
        spool_dir: where zip files are spooled (needs their central directory).
        part_size_bytes: multipart part size (S3 minimum 5 MiB; 10,000 parts maximum).
        upload_parts_in_flight: parts uploading at once per job (and held in memory).
        checksum_algorithm: the S3 checksum sent with every part and object.
        stale_commit_seconds: an object left by an attempt that never wrote its manifest
            is replaced once it is this old (the committing phase of a job lasts seconds).
        resume: keep an interrupted job's uploads under a checkpoint and continue them
            on the next delivery (ADR 0020); off, every attempt starts from byte 0.
        checkpoint_seconds: the least time between two checkpoint writes of a job
            (ADR 0020); a crash loses at most the parts uploaded in that window.
        release_settle_seconds: on a release, how long parts on the wire may take to
            land before the checkpoint is written (within ECS's 120 s stop timeout).
        protection_minutes: ECS task scale-in protection held while busy.
        drain_after_minutes / drain_grace_minutes: the task's maximum age, then how long
            its running jobs may finish while it drains (``exportpipe.worker.lifetime``).
        source_buckets: buckets ``s3://`` sources may be read from (comma-separated,
            env EXPORTPIPE_SOURCE_BUCKETS). Empty (the default) refuses every ``s3://``
            URL: the task role could otherwise be made to read any bucket it can reach.
        max_spool_bytes: the largest zip spooled to local disk for one job; the task's
            ephemeral storage is shared by the jobs running at once (at most four of
            unknown or large size under the default budget: 50 GiB / 4).
    """

    jobs_queue_url: str = Field(min_length=1)
    jobs_dlq_url: str = Field(min_length=1)
    concurrency: int = Field(default=DEFAULT_DEPLOYMENT.worker.concurrency, ge=1, le=64)
    job_budget_bytes: int = Field(
        default=DEFAULT_DEPLOYMENT.worker.job_budget_bytes or 0, ge=16 * _MIB
    )
    visibility_timeout_seconds: int = Field(default=_JOBS.visibility_timeout_seconds, ge=5)
    heartbeat_seconds: float = Field(default=_JOBS.heartbeat_seconds, gt=0)
    max_receive_count: int = Field(default=_JOBS.max_receive_count, ge=1)

    download_allowed_hosts: Annotated[frozenset[str], NoDecode] = frozenset()
    max_redirects: int = Field(default=_DL.max_redirects, ge=0, le=10)
    connect_timeout_seconds: float = Field(default=_DL.connect_timeout, gt=0)
    read_timeout_seconds: float = Field(default=_DL.read_timeout, gt=0)
    download_attempts: int = Field(default=_DL.attempts, ge=1, le=20)
    download_chunk_bytes: int = Field(default=_DL.chunk_bytes, ge=16 * 1024)
    download_buffer_chunks: int = Field(default=_DL.buffer_chunks, ge=1, le=256)
    max_downloads_per_host: int = Field(default=16, ge=1, le=1024)

    max_members: int = Field(default=_EX.max_members, ge=1)
    max_total_output_bytes: int = Field(default=_EX.max_total_output_bytes, ge=1)
    max_compression_ratio: float = Field(default=_EX.max_compression_ratio, gt=1)
    ratio_check_after_bytes: int = Field(default=_EX.ratio_check_after_bytes, ge=0)
    max_line_bytes: int = Field(default=8 * _MIB, ge=1024)
    spool_dir: Path = Path("/tmp")  # noqa: S108 - the task's ephemeral storage

    part_size_bytes: int = Field(default=_UP.part_size, ge=5 * _MIB, le=5 * 1024 * _MIB)
    upload_parts_in_flight: int = Field(default=_UP.parts_in_flight, ge=1, le=32)
    checksum_algorithm: ChecksumAlgorithm = _UP.checksum_algorithm
    stale_commit_seconds: float = Field(default=_UP.stale_commit_seconds, ge=0)
    resume: bool = True
    checkpoint_seconds: float = Field(default=5.0, ge=0)
    release_settle_seconds: float = Field(default=20.0, ge=0, le=100)

    protection_minutes: int = Field(
        default=DEFAULT_DEPLOYMENT.worker_scaling.protection_minutes, ge=1, le=2880
    )
    drain_after_minutes: float = Field(
        default=DEFAULT_DEPLOYMENT.worker_scaling.drain_after_minutes, gt=0
    )
    drain_grace_minutes: float = Field(
        default=DEFAULT_DEPLOYMENT.worker_scaling.drain_grace_minutes, ge=0
    )
    source_buckets: Annotated[frozenset[str], NoDecode] = frozenset()
    max_spool_bytes: int = Field(default=_EX.max_spool_bytes, ge=_MIB)

    @property
    def download(self) -> DownloadTuning:
        """How jobs read their sources, as one object."""
        return DownloadTuning(
            max_redirects=self.max_redirects,
            attempts=self.download_attempts,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            chunk_bytes=self.download_chunk_bytes,
            buffer_chunks=self.download_buffer_chunks,
        )

    @property
    def extract_limits(self) -> ExtractLimits:
        """The bounds extraction enforces, as one object."""
        return ExtractLimits(
            max_members=self.max_members,
            max_total_output_bytes=self.max_total_output_bytes,
            max_compression_ratio=self.max_compression_ratio,
            ratio_check_after_bytes=self.ratio_check_after_bytes,
            spool_dir=self.spool_dir,
            max_spool_bytes=self.max_spool_bytes,
        )

    @property
    def upload(self) -> UploadTuning:
        """How jobs write to S3, as one object."""
        return UploadTuning(
            part_size=self.part_size_bytes,
            parts_in_flight=self.upload_parts_in_flight,
            checksum_algorithm=self.checksum_algorithm,
            stale_commit_seconds=self.stale_commit_seconds,
        )

    def job_memory(self) -> JobMemory:
        """What one job may hold in memory, by source size, with these settings."""
        return JobMemory(
            part_bytes=self.part_size_bytes,
            parts_in_flight=self.upload_parts_in_flight,
            download_buffer_bytes=self.download_buffer_chunks * self.download_chunk_bytes,
            ratio_check_after_bytes=self.ratio_check_after_bytes,
            max_compression_ratio=self.max_compression_ratio,
        )

    @field_validator("download_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
        return value

    @field_validator("source_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(b.strip() for b in value.split(",") if b.strip())
        return value
