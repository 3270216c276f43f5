"""Streamed extraction of a downloaded file into its members, with every refusal named.

:func:`iter_members` turns the raw byte stream of a file into a sequence of
:class:`Member` streams, one per output object. Each member must be read to its end (or
abandoned) before the next is requested. Nothing is written to disk except a zip file,
which needs its central directory and is spooled to ``spool_dir``.

Supported compressions: ``gzip`` (multi-member, through python-isal), ``zstd``
(multi-frame, through zstandard's ``stream_reader``), ``zip``, ``tar``, ``tar.gz`` and
``none``; with ``compression=None`` the format is recognised from its magic bytes.

Refused, with :class:`~exportpipe.common.errors.ArchiveRejected` and a specific reason:
member paths that escape (``..``, absolute, backslashes, drive letters, control
characters), symbolic and hard links, devices and FIFOs, sparse members, encrypted zip
entries, nested archives, duplicate member paths, more members than ``max_members``,
total output beyond ``max_total_output_bytes``, and an output/input ratio beyond
``max_compression_ratio`` once ``ratio_check_after_bytes`` have been produced. Every
decompression call is bounded by the requested read size.
"""

from __future__ import annotations

import itertools
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast

import zstandard
from isal import igzip
from isal.igzip_lib import IsalError

from exportpipe.common.errors import ArchiveRejected, IntegrityError
from exportpipe.common.schemas import Compression
from exportpipe.worker.download import Readable

__all__ = [
    "ExtractLimits",
    "Member",
    "detect_compression",
    "iter_members",
    "output_name",
    "safe_member_path",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OTHER_ARCHIVE_MAGICS = (
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
    b"\x1f\x9d",  # compress (.Z)
)
_ARCHIVE_SUFFIXES = (
    ".zip",
    ".gz",
    ".tgz",
    ".tar",
    ".zst",
    ".zstd",
    ".bz2",
    ".xz",
    ".7z",
    ".rar",
    ".jar",
)
_COMPRESSION_SUFFIXES: dict[str, tuple[str, ...]] = {
    "gzip": (".gz", ".gzip"),
    "zstd": (".zst", ".zstd"),
}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PEEK = 512
# What the decoders raise on corrupt input (python-isal's error type is untyped).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    zlib.error,
    cast(type[BaseException], IsalError),
    zstandard.ZstdError,
    zipfile.BadZipFile,
)
_MAX_KEY_PART = 900


@dataclass(frozen=True, kw_only=True)
class ExtractLimits:
    """The bounds extraction enforces (from :class:`WorkerSettings`)."""

    max_members: int = 10_000
    max_total_output_bytes: int = 200 * 1024**3
    max_compression_ratio: float = 200.0
    ratio_check_after_bytes: int = 16 * 1024**2
    spool_dir: Path | None = None
    max_spool_bytes: int = 10 * 1024**3


@dataclass
class Member:
    """One output object: its relative path and a stream of its (uncompressed) bytes."""

    path: str
    stream: Readable


def safe_member_path(name: str) -> str:
    """Normalise an archive member name, or refuse it.

    ``./a//b`` becomes ``a/b``; ``..`` components, absolute paths, backslashes, drive
    letters and control characters are refused.

    Raises:
        ArchiveRejected: ``reason="path_escape"`` (or ``"bad_member_name"``).
    """
    if "\\" in name or name.startswith("/") or _DRIVE.match(name):
        raise ArchiveRejected(f"member path {name!r} escapes the output", reason="path_escape")
    if _CONTROL.search(name):
        raise ArchiveRejected(
            f"member path {name!r} has control characters", reason="bad_member_name"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRejected(f"member path {name!r} escapes the output", reason="path_escape")
    if not parts:
        raise ArchiveRejected(f"member path {name!r} is empty", reason="bad_member_name")
    path = "/".join(parts)
    if len(path.encode()) > _MAX_KEY_PART:
        raise ArchiveRejected(f"member path {path[:80]!r}... is too long", reason="bad_member_name")
    return path


def output_name(file_name: str, compression: str | None) -> str:
    """The member path of a single compressed file: its name without the suffix."""
    base = PurePosixPath(file_name.replace("\\", "/")).name or "data"
    for suffix in _COMPRESSION_SUFFIXES.get(compression or "", ()):
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return safe_member_path(base[: -len(suffix)])
    return safe_member_path(base)


def _looks_like_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _is_archive_magic(head: bytes) -> bool:
    return (
        head.startswith(_GZIP_MAGIC)
        or head.startswith(_ZSTD_MAGIC)
        or head.startswith(_ZIP_MAGICS)
        or head.startswith(_OTHER_ARCHIVE_MAGICS)
        or _looks_like_tar(head)
    )


def detect_compression(head: bytes) -> Compression:
    """Recognise a compression/archive format from the first bytes of a file."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_ZIP_MAGICS):
        return "zip"
    if _looks_like_tar(head):
        return "tar"
    return "none"


class _Peekable:
    """A stream whose first bytes can be looked at without consuming them."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._head = b""

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            data = self._inner.read(size - len(self._head))
            if not data:
                break
            self._head += data
        return self._head[:size]

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._inner.read(size)


class _Meter:
    """Counts compressed input and uncompressed output; enforces the output limits."""

    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.input_bytes = 0
        self.output_bytes = 0

    def count_output(self, n: int) -> None:
        self.output_bytes += n
        lim = self.limits
        if self.output_bytes > lim.max_total_output_bytes:
            raise ArchiveRejected(
                f"uncompressed output exceeds the {lim.max_total_output_bytes} byte limit",
                reason="output_too_large",
            )
        inp = self.input_bytes
        if (
            self.output_bytes > lim.ratio_check_after_bytes
            and self.output_bytes > lim.max_compression_ratio * max(inp, 1)
        ):
            raise ArchiveRejected(
                f"compression ratio above {lim.max_compression_ratio:g}:1 "
                f"({self.output_bytes} bytes out of {inp}): refusing a likely bomb",
                reason="compression_ratio",
            )


class _CountingInput:
    """Counts bytes read from the compressed stream into a meter."""

    def __init__(self, inner: Readable, meter: _Meter) -> None:
        self._inner = inner
        self._meter = meter

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self._meter.input_bytes += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """``read`` into ``buffer`` (python-isal's gzip reader asks for this)."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    # zstandard and tarfile probe for these; the stream is not seekable.
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class _MemberStream:
    """A member's output stream: bounded reads, metered, decoder errors named."""

    def __init__(self, inner: Any, meter: _Meter | None, *, what: str) -> None:
        self._inner = inner
        self._meter = meter  # None: the bytes are already metered further up
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = 1 << 20
        try:
            data: bytes = self._inner.read(size)
        except (ArchiveRejected, IntegrityError):
            raise
        except EOFError:
            raise IntegrityError(
                f"{self._what}: compressed data ends early (truncated file)", reason="truncated"
            ) from None
        except _DECODE_ERRORS as exc:
            if _is_our_error(exc):
                raise
            raise ArchiveRejected(
                f"{self._what}: corrupt compressed data ({exc})", reason="corrupt_compressed_data"
            ) from None
        except (tarfile.TarError, NotImplementedError, RuntimeError) as exc:
            raise ArchiveRejected(f"{self._what}: {exc}", reason="corrupt_archive") from None
        if data and self._meter is not None:
            self._meter.count_output(len(data))
        return data


def _is_our_error(exc: BaseException) -> bool:
    from exportpipe.common.errors import ExportPipeError

    return isinstance(exc, ExportPipeError)


def _check_nested(path: str, head: bytes) -> None:
    lower = path.lower()
    if lower.endswith(_ARCHIVE_SUFFIXES) or _is_archive_magic(head):
        raise ArchiveRejected(
            f"member {path!r} is itself an archive; nested archives are not extracted",
            reason="nested_archive",
        )


def _archive_member(stream: Any, meter: _Meter | None, *, path: str, what: str) -> Member:
    """A member of a zip or tar, refused if it is itself an archive."""
    peek = _Peekable(_MemberStream(stream, meter, what=what))
    _check_nested(path, peek.peek(_PEEK))
    return Member(path=path, stream=peek)


def _gzip_reader(source: Readable) -> Any:
    return igzip.IGzipFile(fileobj=source, mode="rb")  # type: ignore[no-untyped-call]


def _zstd_reader(source: Readable) -> Any:
    return zstandard.ZstdDecompressor().stream_reader(
        cast(Any, source), read_size=1 << 20, read_across_frames=True, closefd=False
    )


def _tar_members(fileobj: Any, limits: ExtractLimits, *, what: str) -> Iterator[Member]:
    """Members of a streamed tar (``fileobj`` is already metered)."""
    try:
        archive = tarfile.open(fileobj=fileobj, mode="r|")  # noqa: SIM115 - streamed, closed below
    except tarfile.TarError as exc:
        raise ArchiveRejected(
            f"{what}: not a readable tar archive ({exc})", reason="corrupt_archive"
        ) from None
    seen: set[str] = set()
    entries = 0
    try:
        while True:
            try:
                info = archive.next()
            except tarfile.TarError as exc:
                raise ArchiveRejected(f"{what}: {exc}", reason="corrupt_archive") from None
            except EOFError:
                raise IntegrityError(f"{what}: archive ends early", reason="truncated") from None
            if info is None:
                break
            entries += 1
            if entries > limits.max_members:
                raise ArchiveRejected(
                    f"{what}: more than {limits.max_members} members", reason="too_many_members"
                )
            name = info.name
            if info.issym():
                raise ArchiveRejected(
                    f"{what}: member {name!r} is a symbolic link", reason="symlink"
                )
            if info.islnk():
                raise ArchiveRejected(f"{what}: member {name!r} is a hard link", reason="hardlink")
            if info.ischr() or info.isblk() or info.isfifo():
                raise ArchiveRejected(
                    f"{what}: member {name!r} is a device or FIFO", reason="device"
                )
            if info.issparse():
                raise ArchiveRejected(f"{what}: member {name!r} is sparse", reason="sparse_member")
            path = safe_member_path(name)
            if info.isdir():
                continue
            if not info.isreg():
                raise ArchiveRejected(
                    f"{what}: member {name!r} has unsupported type {info.type!r}",
                    reason="unsupported_member_type",
                )
            if path in seen:
                raise ArchiveRejected(
                    f"{what}: duplicate member {path!r}", reason="duplicate_member"
                )
            seen.add(path)
            inner = archive.extractfile(info)
            if inner is None:  # only for non-regular members, refused above
                raise ArchiveRejected(
                    f"{what}: member {name!r} has no content", reason="corrupt_archive"
                )
            yield _archive_member(inner, None, path=path, what=f"{what}:{path}")
    finally:
        archive.close()


def _zip_members(
    source: Readable, meter: _Meter, limits: ExtractLimits, *, what: str
) -> Iterator[Member]:
    with ExitStack() as stack:
        spool = stack.enter_context(
            tempfile.TemporaryFile(prefix="exportpipe-zip-", dir=limits.spool_dir)
        )
        spooled = 0
        while True:
            data = source.read(1 << 20)
            if not data:
                break
            spooled += len(data)
            if spooled > limits.max_total_output_bytes:
                raise ArchiveRejected(
                    f"{what}: zip larger than the {limits.max_total_output_bytes} byte limit",
                    reason="output_too_large",
                )
            if spooled > limits.max_spool_bytes:
                # Jobs share the task's disk: one huge zip must not fill it under others.
                raise ArchiveRejected(
                    f"{what}: zip larger than the {limits.max_spool_bytes} byte spool limit "
                    "(EXPORTPIPE_MAX_SPOOL_BYTES)",
                    reason="spool_too_large",
                )
            spool.write(data)
        spool.seek(0)
        try:
            archive = stack.enter_context(zipfile.ZipFile(spool))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
            raise ArchiveRejected(
                f"{what}: not a readable zip ({exc})", reason="corrupt_archive"
            ) from None
        if len(infos) > limits.max_members:
            raise ArchiveRejected(
                f"{what}: {len(infos)} members, more than {limits.max_members}",
                reason="too_many_members",
            )
        _check_zip_directory(infos, limits, what=what)
        seen: set[str] = set()
        for info in infos:
            mode = info.external_attr >> 16
            if info.flag_bits & 0x1:
                raise ArchiveRejected(
                    f"{what}: member {info.filename!r} is encrypted", reason="encrypted"
                )
            if info.create_system == 3 and mode:
                if stat.S_ISLNK(mode):
                    raise ArchiveRejected(
                        f"{what}: member {info.filename!r} is a symbolic link", reason="symlink"
                    )
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: permissions only
                    raise ArchiveRejected(
                        f"{what}: member {info.filename!r} is a device or FIFO", reason="device"
                    )
            path = safe_member_path(info.orig_filename)
            if info.is_dir():
                continue
            if path in seen:
                raise ArchiveRejected(
                    f"{what}: duplicate member {path!r}", reason="duplicate_member"
                )
            seen.add(path)
            try:
                inner = archive.open(info)
            except (NotImplementedError, RuntimeError, zipfile.BadZipFile) as exc:
                raise ArchiveRejected(
                    f"{what}: member {path!r} cannot be read ({exc})", reason="unsupported_member"
                ) from None
            with inner:
                # zipfile caps each member's output at its declared size, which
                # _check_zip_directory bounded; the meter watches the running total.
                meter.input_bytes = spooled
                yield _archive_member(inner, meter, path=path, what=f"{what}:{path}")


def _check_zip_directory(infos: list[zipfile.ZipInfo], limits: ExtractLimits, *, what: str) -> None:
    """Refuse bombs visible in the central directory before inflating anything."""
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_output_bytes:
        raise ArchiveRejected(
            f"{what}: declares {declared} uncompressed bytes, over the "
            f"{limits.max_total_output_bytes} byte limit",
            reason="output_too_large",
        )
    for info in infos:
        if (
            info.file_size > limits.ratio_check_after_bytes
            and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1)
        ):
            raise ArchiveRejected(
                f"{what}: member {info.filename!r} declares a compression ratio above "
                f"{limits.max_compression_ratio:g}:1",
                reason="compression_ratio",
            )
    # Overlapping entries (several directory entries sharing one compressed body) are
    # the classic non-recursive bomb; Python only rejects them from 3.11.8 on.
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for cur, nxt in itertools.pairwise(ordered):
        end = cur.header_offset + 30 + len(cur.orig_filename.encode()) + cur.compress_size
        if nxt.header_offset < end:
            raise ArchiveRejected(f"{what}: overlapping zip entries", reason="overlapping_entries")


def iter_members(
    source: Readable,
    *,
    compression: Compression | None,
    file_name: str,
    limits: ExtractLimits,
) -> Iterator[Member]:
    """Yield the members of the file streamed by ``source``.

    Args:
        source: the raw (compressed) bytes of the downloaded file.
        compression: the job's declared compression, or ``None`` to detect it.
        file_name: the job's file name (names the member of a single compressed file).
        limits: the bounds to enforce.

    Raises:
        ArchiveRejected: an unsafe or over-limit archive (see the module docstring).
        IntegrityError: compressed data that ends early.
    """
    meter = _Meter(limits)
    what = output_name(file_name, None)
    peekable = _Peekable(source)
    detected = False
    if compression is None:
        compression = detect_compression(peekable.peek(_PEEK))
        detected = True
    counted = _CountingInput(peekable, meter)
    if compression == "none":
        # No extraction: the file is its own single member (ratio 1, size cap applies).
        yield Member(path=what, stream=_MemberStream(counted, meter, what=what))
        return
    if compression == "zip":
        yield from _zip_members(counted, meter, limits, what=what)
        return
    if compression == "tar":
        yield from _tar_members(_MemberStream(counted, meter, what=what), limits, what=what)
        return
    if compression == "tar.gz":
        yield from _tar_members(
            _MemberStream(_gzip_reader(counted), meter, what=what), limits, what=what
        )
        return
    opener = _gzip_reader if compression == "gzip" else _zstd_reader
    decoded = _Peekable(_MemberStream(opener(counted), meter, what=what))
    head = decoded.peek(_PEEK)
    if detected and compression == "gzip" and _looks_like_tar(head):
        yield from _tar_members(decoded, limits, what=what)
        return
    path = output_name(file_name, compression)
    if _is_archive_magic(head):
        hint = " (declare compression 'tar.gz')" if _looks_like_tar(head) else ""
        raise ArchiveRejected(
            f"{what}: the {compression} stream contains another archive{hint}",
            reason="nested_archive",
        )
    yield Member(path=path, stream=decoded)
