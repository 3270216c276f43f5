"""The output contract: where an export's objects live in S3 and what its records say.

This module is the one home of the output layout. Every writer (worker, completion)
and every reader (orchestrator, CLI, verify, benchmarks) builds keys and records here,
so changing the layout is a change to this module alone::

    s3://{bucket}/{root}                 root = {prefix}{export_id}/
        data/{file_id}/{member_path}     the validated members of file ``file_id``
        manifests/{file_id}.json         FileManifest: the file's commit marker, written last
        rejected/{file_id}.json          FileRejection: why the file was refused
        checkpoints/{file_id}.json       an interrupted attempt's progress (ADR 0020),
                                         deleted once the file commits or is refused;
                                         tagged CHECKPOINT_TAG, so a bucket lifecycle
                                         rule expires one an attempt left behind
        _manifest.json                   ExportManifest: written once, when the export ends

``prefix`` is the request's ``destination_prefix`` or, by default,
``EXPORTPIPE_OUTPUT_PREFIX``; it must lie under the output prefix (the services' IAM
grant). ``file_id`` is the id the Export API listed the file under.

**Destination rule.** A file's keys live under *its own export's* root: a job's
destination must satisfy :func:`is_export_root` (last segment its export id, the rest
under the output prefix), so a job for export A can never write into B's folder.
**Key limit.** Every key must fit S3's :data:`S3_MAX_KEY_BYTES`; the id rule and the
prefix bound of :mod:`exportpipe.common.schemas` keep the fixed keys within it, and a
member whose key would not fit is refused before any upload.

Every record carries the same envelope as the wire messages: ``schema`` (its type) and
``version`` (its major version). Readers accept their own major version and ignore
fields they do not know, so a writer may add optional fields in a compatible release.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "CHECKPOINT_EXPIRY_DAYS",
    "CHECKPOINT_TAG",
    "S3_MAX_KEY_BYTES",
    "ExportKeys",
    "ExportManifest",
    "FileKeys",
    "FileManifest",
    "FileRejection",
    "ManifestMember",
    "RejectedFile",
    "SourceRef",
    "export_root",
    "is_export_root",
    "is_under",
    "relative_prefix",
]

DATA = "data/"
MANIFESTS = "manifests/"
REJECTED = "rejected/"
CHECKPOINTS = "checkpoints/"
EXPORT_MANIFEST = "_manifest.json"
S3_MAX_KEY_BYTES = 1024
CHECKPOINT_TAG = ("exportpipe-object", "checkpoint")
"""The S3 object tag every checkpoint is written with (key, value)."""
CHECKPOINT_EXPIRY_DAYS = 2
"""Days after its last write that the bucket expires a checkpoint nobody deleted (one
a killed attempt's late PUT left behind after another attempt committed). By then the
uploads it names are gone too: the bucket aborts uploads a day after they start."""


def relative_prefix(prefix: str) -> str:
    """``prefix`` as a relative S3 key prefix ending in ``/`` (``""`` stays ``""``).

    Raises:
        ValueError: ``prefix`` is absolute, contains a backslash or a ``..`` segment.
    """
    if prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"{prefix!r} is not a relative key prefix")
    return prefix if prefix == "" or prefix.endswith("/") else prefix + "/"


def is_under(prefix: str, output_prefix: str) -> bool:
    """Whether ``prefix`` lies under ``output_prefix`` (where the services may write)."""
    return prefix.startswith(output_prefix)


def export_root(prefix: str, export_id: str) -> str:
    """The root of export ``export_id`` under ``prefix``: ``{prefix}{export_id}/``."""
    return f"{relative_prefix(prefix)}{export_id}/"


def is_export_root(prefix: str, export_id: str, *, output_prefix: str) -> bool:
    """Whether ``prefix`` is export ``export_id``'s own root under ``output_prefix``.

    That is ``{base}{export_id}/`` with ``base`` a relative prefix under the output
    prefix (the output prefix itself or a ``destination_prefix`` below it).
    """
    base, sep, last = prefix.removesuffix("/").rpartition("/")
    base += sep
    try:
        relative_prefix(base)
    except ValueError:
        return False
    return prefix.endswith("/") and last == export_id and is_under(base, output_prefix)


@dataclass(frozen=True)
class FileKeys:
    """The keys one listed file may write, under its export's root."""

    root: str
    file_id: str

    @property
    def data_prefix(self) -> str:
        """Prefix of the file's members: ``{root}data/{file_id}/``."""
        return f"{self.root}{DATA}{self.file_id}/"

    @property
    def manifest(self) -> str:
        """The file's commit marker: ``{root}manifests/{file_id}.json``."""
        return f"{self.root}{MANIFESTS}{self.file_id}.json"

    @property
    def rejected(self) -> str:
        """The file's rejection record: ``{root}rejected/{file_id}.json``."""
        return f"{self.root}{REJECTED}{self.file_id}.json"

    @property
    def checkpoint(self) -> str:
        """The file's resume checkpoint: ``{root}checkpoints/{file_id}.json`` (ADR 0020)."""
        return f"{self.root}{CHECKPOINTS}{self.file_id}.json"

    def member(self, path: str) -> str:
        """The key of member ``path`` (relative, as the archive names it)."""
        return self.data_prefix + path


@dataclass(frozen=True)
class ExportKeys:
    """The keys of one export: its root, its manifest, and each file's keys."""

    root: str

    @classmethod
    def at(cls, root: str) -> ExportKeys:
        """Keys under an existing export root (validated as a relative prefix)."""
        return cls(relative_prefix(root))

    @classmethod
    def of(cls, prefix: str, export_id: str) -> ExportKeys:
        """Keys of ``export_id`` under ``prefix``."""
        return cls(export_root(prefix, export_id))

    @property
    def manifest(self) -> str:
        """The export manifest: ``{root}_manifest.json``."""
        return self.root + EXPORT_MANIFEST

    @property
    def checkpoints(self) -> str:
        """Prefix of the files' resume checkpoints: ``{root}checkpoints/`` (ADR 0020)."""
        return self.root + CHECKPOINTS

    def file(self, file_id: str) -> FileKeys:
        """Keys of listed file ``file_id``."""
        return FileKeys(self.root, file_id)


def _now() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    """Base of the records written to S3: the ``schema``/``version`` envelope."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    SCHEMA: ClassVar[str]
    VERSION: ClassVar[int] = 1

    version: int = 1

    def to_json(self) -> bytes:
        """The record as indented JSON, envelope first."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record, envelope first."""
        body = self.model_dump(mode="json", by_alias=True)
        return {"schema": body.pop("schema"), "version": body.pop("version"), **body}

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Parse and validate a stored record.

        Raises:
            ValueError: not JSON, not this record type, a newer major version, or
                invalid fields.
        """
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{cls.SCHEMA}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{cls.SCHEMA}: not a JSON object")
        if value.get("schema", cls.SCHEMA) != cls.SCHEMA:
            raise ValueError(f"{cls.SCHEMA}: found a {value.get('schema')!r} record")
        if int(value.get("version", 1)) > cls.VERSION:
            raise ValueError(f"{cls.SCHEMA}: version {value['version']} is newer than this reader")
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise ValueError(f"{cls.SCHEMA}: {exc.error_count()} invalid field(s)") from None


class SourceRef(BaseModel):
    """The file as it was downloaded. ``url`` is redacted (no query string or userinfo)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str
    size: int | None = None
    sha256: str | None = None


class ManifestMember(BaseModel):
    """One committed object of a file."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str
    key: str
    size: int
    sha256: str
    records: int | None = None


class FileManifest(_Record):
    """``manifests/{file_id}.json``: the file is committed, and these are its objects."""

    SCHEMA: ClassVar[str] = "exportpipe.FileManifest"
    schema_name: Literal["exportpipe.FileManifest"] = Field(
        default="exportpipe.FileManifest", alias="schema"
    )

    job_id: str
    export_id: str
    file_id: str
    file_name: str
    format: str
    compression: str | None = None
    source: SourceRef
    members: list[ManifestMember]
    completed_at: datetime = Field(default_factory=_now)

    def same_source(self, *, size: int | None, sha256: str | None) -> bool:
        """Whether this manifest commits the source a job describes (as far as it does)."""
        if sha256 is not None and self.source.sha256 != sha256:
            return False
        return size is None or self.source.size == size


class FileRejection(_Record):
    """``rejected/{file_id}.json``: the file was refused, and why."""

    SCHEMA: ClassVar[str] = "exportpipe.FileRejected"
    schema_name: Literal["exportpipe.FileRejected"] = Field(
        default="exportpipe.FileRejected", alias="schema"
    )

    job_id: str
    export_id: str
    file_id: str
    file_name: str
    source: SourceRef
    error: str
    reason: str
    message: str
    rejected_at: datetime = Field(default_factory=_now)


class RejectedFile(BaseModel):
    """One refused file in the export manifest."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    file_id: str
    reason: str | None = None
    size: int | None = None


class ExportManifest(_Record):
    """``_manifest.json``: the export ended; every committed and every refused file.

    ``files`` holds each committed file's :class:`FileManifest` as stored; ``rejected``
    names each refused file with its reason. Written once, by whoever wins the
    completion claim, streamed so its size is not bounded by memory (see
    :meth:`head_json`).
    """

    SCHEMA: ClassVar[str] = "exportpipe.ExportManifest"
    schema_name: Literal["exportpipe.ExportManifest"] = Field(
        default="exportpipe.ExportManifest", alias="schema"
    )

    export_id: str
    tenant: str | None = None
    status: Literal["completed", "completed_with_errors"]
    files_expected: int
    files_done: int
    files_rejected: int
    bytes: int
    files: list[FileManifest] = Field(default_factory=list)
    rejected: list[RejectedFile] = Field(default_factory=list)

    def head_json(self) -> builtins.bytes:
        """The manifest's JSON up to the ``files`` array, open: ``{..., "files":[``.

        A streaming writer follows it with the stored file manifests, comma-separated,
        then ``],"rejected":[...]}``.
        """
        head = self.to_dict()
        del head["files"], head["rejected"]
        return orjson.dumps(head)[:-1] + b',"files":['
