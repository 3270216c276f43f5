"""The one error hierarchy of exportpipe.

The queue runtime decides what happens to a message from the *type* of the error its
handler raised, so every failure a handler can foresee is one of these::

    ExportPipeError                      base; never raised directly
    ├── RetryableError                   transient: the message returns to the queue
    │   │                                with a backoff visibility and is tried again
    │   ├── UpstreamUnavailable          Export API / download host 5xx, timeout, reset
    │   ├── RateLimited                  429/503 with Retry-After (carries the delay)
    │   ├── AwsTransientError            throttling or 5xx from an AWS service
    │   └── JobReleased                  the job was released (shutdown); not a failure
    │       └── LeaseLost                the visibility could not be extended: another
    │                                    consumer may hold the message; never touch it
    └── PermanentError                   retrying cannot help: dead-letter with the reason
        ├── MessageError                 the message itself is unusable
        │   ├── MalformedMessage         not JSON, wrong shape, failed validation
        │   └── UnsupportedSchemaVersion a schema name/version this build cannot read
        ├── UpstreamRejected             401/403/404, export failed/expired, bad body
        ├── UnsafeSource                 URL refused by the download safety rules
        ├── IntegrityError               size/sha256 mismatch, truncated content
        ├── ArchiveRejected              unsafe or over-limit archive
        ├── ValidationFailed             content does not match its declared format
        └── JobDeadlineExceeded          the job ran past EXPORTPIPE_MAX_JOB_SECONDS

Anything else a handler raises is treated as a bug: retried with backoff until the
queue's redrive policy moves it to the dead-letter queue, so a poison message can never
loop forever or vanish.
"""

from __future__ import annotations

__all__ = [
    "ArchiveRejected",
    "AwsTransientError",
    "ExportPipeError",
    "IntegrityError",
    "JobDeadlineExceeded",
    "JobReleased",
    "LeaseLost",
    "MalformedMessage",
    "MessageError",
    "PermanentError",
    "RateLimited",
    "RetryableError",
    "UnsafeSource",
    "UnsupportedSchemaVersion",
    "UpstreamRejected",
    "UpstreamUnavailable",
    "ValidationFailed",
]


class ExportPipeError(Exception):
    """Base of every error exportpipe raises on purpose.

    Attributes:
        reason: a short, stable, machine-readable code (``snake_case``) recorded with
            dead letters, rejections and metrics. Subclasses set a default.
    """

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The human-readable explanation."""
        return str(self.args[0]) if self.args else self.reason


class RetryableError(ExportPipeError):
    """A transient failure: the same message may well succeed later.

    Attributes:
        retry_after: seconds the caller asked us to wait, if it said (e.g. Retry-After).
    """

    reason = "retryable"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class UpstreamUnavailable(RetryableError):
    """The Export API or a download host failed transiently (5xx, timeout, reset)."""

    reason = "upstream_unavailable"


class RateLimited(RetryableError):
    """The upstream asked us to slow down (429, or 503 with Retry-After)."""

    reason = "rate_limited"


class AwsTransientError(RetryableError):
    """An AWS call kept failing with throttling or server errors after local retries."""

    reason = "aws_transient"


class JobReleased(RetryableError):
    """The runtime released the job (shutdown or lost lease); another consumer takes it."""

    reason = "released"


class LeaseLost(JobReleased):
    """The runtime lost the job's lease (its receipt handle is no longer valid)."""

    reason = "lease_lost"


class PermanentError(ExportPipeError):
    """Retrying the same message cannot succeed: it goes to the dead-letter queue."""

    reason = "permanent"


class MessageError(PermanentError):
    """The message body cannot be used."""

    reason = "bad_message"


class MalformedMessage(MessageError):
    """The body is not JSON, or does not match the schema it names."""

    reason = "malformed_message"


class UnsupportedSchemaVersion(MessageError):
    """The body names a schema or version this build does not understand."""

    reason = "unsupported_schema_version"


class UpstreamRejected(PermanentError):
    """The upstream refused for good: auth failure, unknown or failed export, bad body."""

    reason = "upstream_rejected"


class UnsafeSource(PermanentError):
    """A download URL was refused by the safety rules (scheme, address, redirects)."""

    reason = "unsafe_source"


class IntegrityError(PermanentError):
    """Downloaded bytes do not match the expected size or sha256."""

    reason = "integrity_mismatch"


class ArchiveRejected(PermanentError):
    """An archive is unsafe or over a limit (path escape, link, bomb, encryption...)."""

    reason = "archive_rejected"


class ValidationFailed(PermanentError):
    """Content does not match its declared format."""

    reason = "validation_failed"


class JobDeadlineExceeded(PermanentError):
    """A job ran past ``EXPORTPIPE_MAX_JOB_SECONDS`` (kept under SQS's 12-hour ceiling).

    Permanent: a restart would begin at byte 0 and hit the same limit again, so the file
    is refused with a rejection record instead of looping until the redrive policy
    drops the message without a reason.
    """

    reason = "job_deadline_exceeded"
