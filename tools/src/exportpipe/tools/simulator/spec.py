"""What the simulator serves: exports, their files, and the faults it injects.

Everything is a pydantic model so the same description can be built in Python by a test
or loaded from JSON by ``python -m exportpipe.tools.simulator --exports spec.json``, and
so that a process *other* than the server (an end-to-end test checking what landed in
S3) can rebuild the exact expected bytes from the same JSON (see
:func:`exportpipe.tools.simulator.content.expected_files`).

An export lists its explicit ``files`` first, then ``generated`` files cycling through
``kinds``. Generated files are described lazily (:meth:`ExportSpec.file`), so an export
of a million files costs nothing until a page of it is listed.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ALL_KINDS",
    "KIND_INFO",
    "Corruption",
    "ExportSpec",
    "Fault",
    "FileKind",
    "FileSpec",
    "KindInfo",
    "RandomFaults",
    "SimulatorConfig",
]

FileKind = Literal[
    "jsonl.gz",
    "jsonl.zst",
    "csv.zip",
    "jsonl.tar.gz",
    "jsonl",
    "csv",
    "csv.gz",
    "csv.tar",
    "bin",
]
"""How a file is built: ``<format>.<packaging>``; ``jsonl``/``csv``/``bin`` are plain."""

Corruption = Literal["flip_byte", "bad_record", "path_escape", "bomb"]
"""Ways a file can be bad on purpose.

* ``flip_byte``: the served bytes differ from the listed sha256 (and, for compressed
  files, usually fail their own CRC) -> the worker must reject it as an integrity error.
* ``bad_record``: one record in the middle is invalid (a broken JSON line, a CSV row with
  the wrong column count); the listed sha256 matches what is served, so only content
  validation catches it.
* ``path_escape``: an archive member is named ``../<name>`` (zip and tar kinds only).
* ``bomb``: an archive or compressed file whose content expands to ``bomb_bytes`` of
  zeros (a decompression bomb; compressed kinds only).
"""


class KindInfo(BaseModel):
    """What the listing says about a kind, and how its name ends."""

    model_config = ConfigDict(frozen=True)

    compression: Literal["gzip", "zip", "tar", "tar.gz", "zstd", "none"]
    format: Literal["jsonl", "csv", "binary"]
    suffix: str
    archive: bool


KIND_INFO: dict[str, KindInfo] = {
    "jsonl.gz": KindInfo(compression="gzip", format="jsonl", suffix=".jsonl.gz", archive=False),
    "jsonl.zst": KindInfo(compression="zstd", format="jsonl", suffix=".jsonl.zst", archive=False),
    "csv.gz": KindInfo(compression="gzip", format="csv", suffix=".csv.gz", archive=False),
    "csv.zip": KindInfo(compression="zip", format="csv", suffix=".zip", archive=True),
    "jsonl.tar.gz": KindInfo(compression="tar.gz", format="jsonl", suffix=".tar.gz", archive=True),
    "csv.tar": KindInfo(compression="tar", format="csv", suffix=".tar", archive=True),
    "jsonl": KindInfo(compression="none", format="jsonl", suffix=".jsonl", archive=False),
    "csv": KindInfo(compression="none", format="csv", suffix=".csv", archive=False),
    "bin": KindInfo(compression="none", format="binary", suffix=".bin", archive=False),
}

ALL_KINDS: tuple[FileKind, ...] = get_args(FileKind)
"""The default mix of a generated export, in the order generated files cycle through it."""

_ID = r"^[A-Za-z0-9._:\-]{1,256}$"


class FileSpec(BaseModel):
    """One file of an export (its fields: docs/simulator.md, *A file*).

    ``size_bytes`` is uncompressed and counts whole records, so the real size is within
    one record of it. A listed ``url`` or ``listed_sha256`` replaces only what the listing
    says: the simulator still serves the bytes at its own URL.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    file_id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=1024)
    kind: FileKind = "jsonl.gz"
    size_bytes: int = Field(default=4096, ge=0, le=2**31)
    seed: int = 0
    members: int = Field(default=2, ge=1, le=1000)
    declare_compression: bool = True
    declare_sha256: bool = True
    declare_size: bool = True
    corrupt: Corruption | None = None
    bomb_bytes: int = Field(default=256 * 2**20, ge=1)
    url: str | None = None
    listed_sha256: str | None = None
    truncate_times: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _corruption_fits_kind(self) -> FileSpec:
        info = KIND_INFO[self.kind]
        if self.corrupt == "bad_record" and info.format == "binary":
            raise ValueError("bad_record needs a jsonl or csv kind")
        if self.corrupt == "path_escape" and not info.archive:
            raise ValueError("path_escape needs an archive kind (zip or tar)")
        if self.corrupt == "bomb" and info.compression in ("none", "tar"):
            raise ValueError("bomb needs a compressed kind")
        return self

    @property
    def info(self) -> KindInfo:
        """Compression, format and suffix of this file's kind."""
        return KIND_INFO[self.kind]


class Fault(BaseModel):
    """A scripted response override, applied to the next ``times`` matching requests.

    Its fields are in docs/simulator.md, *Faults*: which requests it matches (``route``,
    ``export_id``, ``file_id``; ``None`` matches all) and what it does instead (a
    ``status``, a delay, a ``malformed`` body, or a download cut at ``truncate_at``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Literal["status", "listing", "download", "any"] = "any"
    export_id: str | None = None
    file_id: str | None = None
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    delay_seconds: float = Field(default=0.0, ge=0)
    malformed: Literal["json", "shape"] | None = None
    truncate_at: int | None = None
    times: int = Field(default=1, ge=1)


class RandomFaults(BaseModel):
    """Seeded random faults for soak and fault-injection runs.

    Rates are probabilities per request. With the same seed and the same request order
    the same requests fail.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    api_error_rate: float = Field(default=0.0, ge=0, le=1)
    api_error_status: int = Field(default=500, ge=500, le=599)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_seconds: float = Field(default=1.0, ge=0)
    download_error_rate: float = Field(default=0.0, ge=0, le=1)
    truncate_rate: float = Field(default=0.0, ge=0, le=1)
    slow_seconds: float = Field(default=0.0, ge=0)
    download_bytes_per_second: int | None = Field(default=None, ge=1)


class ExportSpec(BaseModel):
    """One export the simulator serves (its fields: docs/simulator.md, *An export*).

    The listing gives the explicit ``files`` first, then ``generated`` files cycling
    through ``kinds``; ``empty_pages`` count pages as the client walks them, 0-based.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    export_id: str = Field(pattern=_ID)
    seed: int = 0
    files: tuple[FileSpec, ...] = ()
    generated: int = Field(default=0, ge=0)
    kinds: tuple[FileKind, ...] = ALL_KINDS
    file_size: int = Field(default=4096, ge=0)
    page_size: int = Field(default=100, ge=1, le=100_000)
    empty_pages: frozenset[int] = frozenset()
    pending_polls: int = Field(default=0, ge=0)
    pending_seconds: float = Field(default=0.0, ge=0)
    final_status: Literal["ready", "failed", "expired"] = "ready"
    forbidden: bool = False
    report_file_count: bool = True
    faults: RandomFaults = RandomFaults()
    scripted: tuple[Fault, ...] = ()

    @model_validator(mode="after")
    def _unique_explicit_ids(self) -> ExportSpec:
        ids = [f.file_id for f in self.files]
        if len(ids) != len(set(ids)):
            raise ValueError("explicit file_ids must be unique")
        clash = [i for i in ids if _GENERATED_ID.match(i)]
        if clash and self.generated:
            raise ValueError(f"explicit file_id {clash[0]!r} clashes with generated ids")
        if not self.kinds:
            raise ValueError("kinds must not be empty")
        return self

    @property
    def count(self) -> int:
        """How many files the export lists."""
        return len(self.files) + self.generated

    def file(self, index: int) -> FileSpec:
        """The ``index``-th listed file (explicit files first, then generated ones)."""
        if index < 0 or index >= self.count:
            raise IndexError(index)
        if index < len(self.files):
            return self.files[index]
        g = index - len(self.files)
        kind = self.kinds[g % len(self.kinds)]
        file_id = f"f{g:06d}"
        return FileSpec(
            file_id=file_id,
            name=f"part-{g:06d}{KIND_INFO[kind].suffix}",
            kind=kind,
            size_bytes=self.file_size,
            seed=_derive_seed(self.seed, self.export_id, file_id),
        )

    def find(self, file_id: str) -> FileSpec | None:
        """The file with ``file_id``, or ``None``."""
        explicit = self._explicit_by_id.get(file_id)
        if explicit is not None:
            return explicit
        match = _GENERATED_ID.match(file_id)
        if match and int(match[1]) < self.generated:
            return self.file(len(self.files) + int(match[1]))
        return None

    @cached_property
    def _explicit_by_id(self) -> dict[str, FileSpec]:
        return {f.file_id: f for f in self.files}

    @classmethod
    def mixed(
        cls,
        export_id: str,
        count: int,
        *,
        seed: int = 0,
        file_size: int = 4096,
        page_size: int = 100,
        **options: object,
    ) -> ExportSpec:
        """An export of ``count`` generated files of every kind (the usual test export)."""
        return cls.model_validate(
            {
                "export_id": export_id,
                "generated": count,
                "seed": seed,
                "file_size": file_size,
                "page_size": page_size,
                **options,
            }
        )


_GENERATED_ID = re.compile(r"^f(\d{6,})$")


def _derive_seed(seed: int, export_id: str, file_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{export_id}\x00{file_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


class SimulatorConfig(BaseModel):
    """What ``python -m exportpipe.tools.simulator --exports FILE`` reads.

    The file may also hold a bare list of exports, or one export.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str | None = None
    exports: tuple[ExportSpec, ...] = ()
    faults: tuple[Fault, ...] = ()
    files_base_url: str | None = None
