"""exportpipe worker: streams each ``DownloadJob`` into validated S3 objects.

Modules, one concept each: :mod:`~exportpipe.worker.settings` (configuration),
:mod:`~exportpipe.worker.safety` (which URLs/addresses may be fetched),
:mod:`~exportpipe.worker.download` (verified, resumable streams),
:mod:`~exportpipe.worker.politeness` (per-host download slots and pauses),
:mod:`~exportpipe.worker.extract` (archives and compression, with refusals),
:mod:`~exportpipe.worker.validate` (content formats),
:mod:`~exportpipe.worker.upload` (multipart uploads with conditional commits),
:mod:`~exportpipe.worker.pipeline` (one job end to end),
:mod:`~exportpipe.worker.handler` (the queue handler),
:mod:`~exportpipe.worker.protection` (ECS scale-in protection).
"""

from exportpipe.worker.download import HttpSource, Prefetcher, S3Source, Source, open_source
from exportpipe.worker.extract import ExtractLimits, Member, iter_members, safe_member_path
from exportpipe.worker.handler import JobHandler
from exportpipe.worker.pipeline import JobResult, MemberResult, Pipeline, keys_for
from exportpipe.worker.politeness import HostPoliteness, parse_retry_after
from exportpipe.worker.protection import TaskProtection
from exportpipe.worker.safety import AddressGuard, address_refusal, check_url, pinned_pool_manager
from exportpipe.worker.settings import WorkerSettings
from exportpipe.worker.upload import CommitConflict, ObjectUpload, Uploader
from exportpipe.worker.validate import validator_for

__all__ = [
    "AddressGuard",
    "CommitConflict",
    "ExtractLimits",
    "HostPoliteness",
    "HttpSource",
    "JobHandler",
    "JobResult",
    "Member",
    "MemberResult",
    "ObjectUpload",
    "Pipeline",
    "Prefetcher",
    "S3Source",
    "Source",
    "TaskProtection",
    "Uploader",
    "WorkerSettings",
    "address_refusal",
    "check_url",
    "iter_members",
    "keys_for",
    "open_source",
    "parse_retry_after",
    "pinned_pool_manager",
    "safe_member_path",
    "validator_for",
]
