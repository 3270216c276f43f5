"""Wire schemas shared by the orchestrator (producer of jobs) and the worker.

Every body is a JSON object with two envelope fields, ``schema`` (the message type) and
``version`` (its major version). A reader accepts its own major version and ignores
fields it does not know, so a producer may add optional fields in a compatible release
and either service can be deployed first. A body with a *newer* major version, an
unknown schema name, or one that fails validation raises a permanent error.

**Ids** (``export_id``, ``file_id``, ``tenant``) follow one rule, :data:`ID_PATTERN`:
1 to :data:`ID_MAX_LENGTH` (128) characters from ``A-Z a-z 0-9 . _ : -``, the first a
letter or digit. So an id is never ``.`` or ``..`` or a hidden name, never contains
``/``, and is one safe S3 key segment and one safe URL path segment. The length bound
is what keeps every key within S3's 1,024-byte limit: a destination is at most
:data:`PREFIX_MAX_LENGTH` (512) bytes of prefix, the export id and ``/``; under it the
longest fixed key is ``manifests/{file_id}.json``, so the fixed keys use at most
512 + 129 + 10 + 128 + 5 = 784 bytes, and an archive member's path gets the rest
(a member whose key would pass 1,024 bytes is refused before any upload).

The destination rule (a job writes only into its own export's folder) lives with the
key layout, in :mod:`exportpipe.common.layout`.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from exportpipe.common.errors import MalformedMessage, UnsupportedSchemaVersion

__all__ = [
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "PREFIX_MAX_LENGTH",
    "Compression",
    "ContentFormat",
    "DownloadJob",
    "ExportCompleted",
    "ExportRequested",
    "Message",
    "S3Destination",
    "decode",
    "encode",
    "is_valid_id",
    "job_id_for",
    "validation_problems",
]

Compression = Literal["gzip", "zip", "tar", "tar.gz", "zstd", "none"]
ContentFormat = Literal["jsonl", "csv", "binary"]

ID_MAX_LENGTH = 128
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
PREFIX_MAX_LENGTH = 512

_Id = Annotated[str, Field(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
_ID_RE = re.compile(ID_PATTERN)
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def job_id_for(export_id: str, file_id: str) -> str:
    """The deterministic id of the job that copies ``file_id`` of ``export_id``.

    The same file always gets the same id, so a re-run page or a duplicate delivery is
    recognisable downstream.
    """
    digest = hashlib.sha256(f"{export_id}\x00{file_id}".encode()).hexdigest()
    return digest[:32]


def is_valid_id(value: str) -> bool:
    """True when ``value`` follows the id rule (see the module docstring)."""
    return _ID_RE.fullmatch(value) is not None


class Message(BaseModel):
    """Base of every wire message: carries the envelope."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    SCHEMA: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready body including the envelope."""
        body = self.model_dump(mode="json", exclude_none=True)
        return {"schema": self.SCHEMA, "version": self.VERSION, **body}


class ExportRequested(Message):
    """SQS 1: copy export ``export_id``; also the orchestrator's continuation state.

    The first message for an export has no cursor and ``page == 0``. After each page the
    orchestrator sends a new one carrying the next cursor, so no message is ever in
    flight for longer than one page takes.
    """

    SCHEMA: ClassVar[str] = "exportpipe.ExportRequested"

    export_id: _Id
    tenant: _Id | None = None
    destination_prefix: str | None = Field(default=None, max_length=PREFIX_MAX_LENGTH)
    requested_at: datetime = Field(default_factory=partial(datetime.now, UTC))
    cursor: str | None = Field(default=None, max_length=4096)
    page: int = Field(default=0, ge=0)
    not_ready_checks: int = Field(default=0, ge=0)
    first_not_ready_at: datetime | None = None
    jobs_emitted: int = Field(default=0, ge=0)

    @field_validator("destination_prefix")
    @classmethod
    def _safe_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("/") or ".." in value.split("/") or "\\" in value:
            raise ValueError("destination_prefix must be a relative S3 key prefix")
        if len(value.encode()) > PREFIX_MAX_LENGTH - 1:
            raise ValueError(f"destination_prefix must fit in {PREFIX_MAX_LENGTH} bytes")
        return value if value == "" or value.endswith("/") else value + "/"


class S3Destination(BaseModel):
    """Where a job's output goes: ``s3://{bucket}/{prefix}`` (prefix ends with ``/``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field(max_length=PREFIX_MAX_LENGTH + ID_MAX_LENGTH + 1)


class DownloadJob(Message):
    """SQS 2: download one listed file and land it, validated, under ``destination``."""

    SCHEMA: ClassVar[str] = "exportpipe.DownloadJob"

    job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    export_id: _Id
    file_id: _Id
    file_name: str = Field(min_length=1, max_length=1024)
    url: str = Field(min_length=1, max_length=8192)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: _Sha256 | None = None
    compression: Compression | None = None
    format: ContentFormat = "binary"
    destination: S3Destination
    tenant: _Id | None = None
    created_at: datetime = Field(default_factory=partial(datetime.now, UTC))

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower_sha(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _job_id_matches(self) -> DownloadJob:
        """Refuse a job whose id does not belong to its (export, file) pair."""
        if self.job_id != job_id_for(self.export_id, self.file_id):
            raise ValueError("job_id does not match (export_id, file_id)")
        return self


class ExportCompleted(Message):
    """Published once when every listed file of an export is done or rejected."""

    SCHEMA: ClassVar[str] = "exportpipe.ExportCompleted"

    export_id: _Id
    tenant: _Id | None = None
    status: Literal["completed", "completed_with_errors"]
    files_expected: int = Field(ge=0)
    files_done: int = Field(ge=0)
    files_rejected: int = Field(ge=0)
    bytes: int = Field(ge=0)
    manifest: str
    completed_at: datetime = Field(default_factory=partial(datetime.now, UTC))


M = TypeVar("M", bound=Message)


def encode(message: Message) -> str:
    """Serialize ``message`` (with its envelope) to the JSON text put on the queue."""
    return orjson.dumps(message.to_wire()).decode()


def decode(body: str | bytes, kind: type[M]) -> M:
    """Parse a queue body as ``kind``.

    Raises:
        MalformedMessage: not JSON, not an object, or fails validation.
        UnsupportedSchemaVersion: another schema name, or a major version this build
            does not know.
    """
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedMessage(f"body is a JSON {type(raw).__name__}, expected an object")
    schema, version = raw.pop("schema", None), raw.pop("version", None)
    if schema != kind.SCHEMA:
        raise UnsupportedSchemaVersion(f"expected schema {kind.SCHEMA!r}, got {schema!r}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedMessage(f"{kind.SCHEMA}: version must be an integer, got {version!r}")
    if version != kind.VERSION:
        raise UnsupportedSchemaVersion(
            f"{kind.SCHEMA} version {version} is not supported (this build reads "
            f"version {kind.VERSION}); deploy a release that understands it, then redrive"
        )
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        problems = validation_problems(exc, whole="<body>")
        raise MalformedMessage(f"{kind.SCHEMA} v{version} is invalid: {problems}") from None


def validation_problems(exc: ValidationError, *, whole: str) -> str:
    """The first five of ``exc``'s errors as ``field: message`` (``whole`` names the
    object itself): locations and messages only, since pydantic's text echoes the input."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()[:5]
    )
