"""exportpipe.common: what the orchestrator and the worker agree on.

Message schemas, settings, the SQS consumer runtime and batch producer, AWS retries,
observability, the error hierarchy and the sizing/scaling source of truth.
"""

from exportpipe.common.errors import (
    ExportPipeError,
    PermanentError,
    RetryableError,
)
from exportpipe.common.schemas import (
    DownloadJob,
    ExportCompleted,
    ExportRequested,
    S3Destination,
    decode,
    encode,
    job_id_for,
)

__all__ = [
    "DownloadJob",
    "ExportCompleted",
    "ExportPipeError",
    "ExportRequested",
    "PermanentError",
    "RetryableError",
    "S3Destination",
    "decode",
    "encode",
    "job_id_for",
]
