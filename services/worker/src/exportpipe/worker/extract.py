"""Streamed extraction of a downloaded file into its members, with every refusal named.

:func:`iter_members` turns the raw byte stream of a file into a sequence of
:class:`Member` streams, one per output object. Each member must be read to its end (or
abandoned) before the next is requested. Nothing is written to disk except a zip file,
which needs its central directory and is spooled to ``spool_dir``.

Supported compressions: ``gzip`` (multi-member, through python-isal), ``zstd``
(multi-frame, through zstandard's ``stream_reader``), ``zip``, ``tar``, ``tar.gz`` and
``none``; with ``compression=None`` the format is recognised from its magic bytes (and a
gzip or zstd stream holding a tar is read as ``tar.gz`` / ``tar.zst``).

Every format proves its own end (ADR 0013), so a cut or damaged file is never taken
for a shorter complete one: a zstd stream must end on a frame boundary (frame content
checksum and size verified by libzstd when the frame carries them); every gzip member's
CRC-32 and length are checked; a tar must reach its end-of-archive marker (a zero
block) through valid headers, and only zeros may follow it; a zip's entries must tile
the file up to the central directory, each local header agreeing with its directory
entry. Failures are ``IntegrityError(reason="truncated")`` for data that ends early,
``ArchiveRejected`` with ``corrupt_archive`` / ``corrupt_compressed_data`` for damage,
and ``trailing_garbage`` for bytes after a complete stream. Any exception a decoder
raises on third-party bytes is classified into one of these.

Refused, with :class:`~exportpipe.common.errors.ArchiveRejected` and a specific reason:
member paths that escape (``..``, absolute, backslashes, drive letters, control
characters), member names that are not UTF-8 (``bad_member_name``), symbolic and hard
links, devices and FIFOs, sparse members, encrypted zip
entries, nested archives, duplicate member paths, more members than ``max_members``,
total output beyond ``max_total_output_bytes``, and an output/input ratio beyond
``max_compression_ratio`` once ``ratio_check_after_bytes`` have been produced. Every
decompression call is bounded by the requested read size.
"""

from __future__ import annotations

import gzip
import re
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial, wraps
from pathlib import PurePosixPath
from typing import Any, ParamSpec, cast

import zstandard
from isal import igzip
from isal.igzip_lib import IsalError

from exportpipe.common.errors import ArchiveRejected, ExportPipeError, IntegrityError
from exportpipe.common.schemas import Compression
from exportpipe.worker.download import Readable
from exportpipe.worker.gzipmembers import GzipMembers
from exportpipe.worker.reentry import ReentryLog
from exportpipe.worker.settings import ExtractLimits
from exportpipe.worker.zstdframes import FrameWalker

__all__ = [
    "ExtractLimits",
    "Member",
    "TarEntry",
    "classified",
    "detect_compression",
    "iter_members",
    "output_name",
    "safe_member_path",
    "zstd_reader",
]

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"  # 0x184D2A5?, little endian, after its low byte
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
_TAR_BLOCK = tarfile.BLOCKSIZE
_TAR_ZERO_BLOCK = bytes(_TAR_BLOCK)
# Extended headers (pax, GNU long names) are read whole into memory by tarfile, and
# CPython before 3.11.10 parses pax records with a regex that backtracks badly
# (CVE-2024-6232): a long path needs a few KiB, so larger ones are refused.
_MAX_TAR_EXTENDED_HEADER = 64 * 1024
_TAR_EXTENDED_TYPES = frozenset(
    (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )
)
# Tar member types refused before their name is even looked at, in this order.
_REFUSED_TAR_TYPES: tuple[tuple[Callable[[tarfile.TarInfo], bool], str, str], ...] = (
    (tarfile.TarInfo.issym, "a symbolic link", "symlink"),
    (tarfile.TarInfo.islnk, "a hard link", "hardlink"),
    (lambda i: i.ischr() or i.isblk() or i.isfifo(), "a device or FIFO", "device"),
    (tarfile.TarInfo.issparse, "sparse", "sparse_member"),
)
_ZIP_LOCAL = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
_ZIP64_SIZES = 0xFFFFFFFF
P = ParamSpec("P")


@dataclass
class Member:
    """One output object: its relative path and a stream of its (uncompressed) bytes.

    ``compression`` is the compression (declared or detected) a member was read with
    when it is the file's entire decoded content (an uncompressed, gzip or zstd file
    that is not an archive: :attr:`whole`), ``None`` for a member of a zip or tar: only
    the former can be resumed at a frame or member start of the compressed stream
    (ADR 0020).
    """

    path: str
    stream: Readable
    compression: Compression | None = None
    # A plain tar's member: where its entry could be read again (built when asked for,
    # as it copies the paths seen so far).
    reentry: Callable[[], TarEntry] | None = None

    @property
    def whole(self) -> bool:
        """True when the member is the file's entire decoded content."""
        return self.compression is not None


@dataclass(frozen=True)
class TarEntry:
    """Where a plain tar can be read again from this member's entry (ADR 0020).

    Attributes:
        offset: the source offset of the entry's first header block (an extended
            header's, if it has one).
        seen: the member paths before it (duplicates are refused across a resume).
        entries: the entries before it (counted against ``max_members``).
    """

    offset: int
    seen: frozenset[str]
    entries: int


def safe_member_path(name: str) -> str:
    """Normalise an archive member name, or refuse it.

    ``./a//b`` becomes ``a/b``; ``..`` components, absolute paths, backslashes, drive
    letters and control characters are refused.

    Raises:
        ArchiveRejected: ``reason="path_escape"`` (or ``"bad_member_name"``).
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # tarfile surfaces bytes that are not UTF-8 as surrogate escapes. Guessing their
        # encoding would name the output object wrongly, so the archive is refused.
        raise ArchiveRejected(
            f"member name {name!r} is not UTF-8 (object keys are UTF-8; re-create the "
            "archive with UTF-8 names, e.g. tar --format=pax)",
            reason="bad_member_name",
        ) from None
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


def _is_archive_magic(head: bytes) -> bool:
    return detect_compression(head) != "none" or head.startswith(_OTHER_ARCHIVE_MAGICS)


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
            cut = len(self._head) if size < 0 else size
            out, self._head = self._head[:cut], self._head[cut:]
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


class _SourceFailure(Exception):
    """A failure of the download itself, carried unchanged through the decoders.

    Only failures of the file's bytes are classified as refusals; this one is raised
    again as it was (retryable or not, as the download decided).
    """

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


class _CountingInput:
    """Counts bytes read from the compressed stream into a meter."""

    def __init__(self, inner: Readable, meter: _Meter) -> None:
        self._inner = inner
        self._meter = meter

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._inner.read(size)
        except ExportPipeError:
            raise
        except Exception as exc:
            raise _SourceFailure(exc) from exc
        self._meter.input_bytes += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        """``read`` into ``buffer`` (python-isal's gzip reader asks for this)."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _EofWatch:
    """Remembers whether its source has reached its end (to tell truncation from damage)."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self.at_eof = False

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        if not data:
            self.at_eof = True
        return data


class _MemberStream:
    """A member's output stream: bounded reads, metered, every decoder error classified.

    ``eof`` (optional) tells whether the underlying bytes ran out, which with tarfile's
    "unexpected end of data" makes a failure a truncation rather than damage.
    """

    def __init__(
        self,
        inner: Any,
        meter: _Meter | None,
        *,
        what: str,
        eof: _EofWatch | None = None,
        kind: str = "compressed data",
    ) -> None:
        self._inner = inner
        self._meter = meter  # None: the bytes are already metered further up
        self._what = what
        self._eof = eof
        self._kind = kind

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = 1 << 20
        try:
            data: bytes = self._inner.read(size)
        except ExportPipeError:
            raise
        except Exception as exc:  # third-party bytes: every failure gets a reason
            raise _classify(exc, self._what, self._eof, self._kind) from None
        if data and self._meter is not None:
            self._meter.count_output(len(data))
        return data


def _classify(
    exc: Exception, what: str, eof: _EofWatch | None, kind: str = "compressed data"
) -> ExportPipeError:
    """The named error for an exception a decoder raised on third-party bytes."""
    if isinstance(exc, ExportPipeError):
        return exc
    if isinstance(exc, _SourceFailure):
        raise exc  # the download's failure, not the file's: unwrapped for the caller
    if isinstance(exc, MemoryError):
        raise exc  # the worker's state, not the file's: never a permanent refusal
    if isinstance(exc, EOFError) or (
        # tarfile's one word for "the data stopped"; it reads ahead, so having reached
        # the end of the input alone does not mean the failure is a truncation.
        eof is not None and eof.at_eof and "unexpected end of data" in str(exc)
    ):
        return IntegrityError(f"{what}: the file ends early (truncated): {exc}", reason="truncated")
    if isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        # The first member's magic is checked up front, so this is after a complete member.
        return ArchiveRejected(
            f"{what}: bytes after the end of the gzip stream that are not a gzip member",
            reason="trailing_garbage",
        )
    if isinstance(exc, _DECODE_ERRORS) and kind == "compressed data":
        return ArchiveRejected(
            f"{what}: corrupt compressed data ({exc})", reason="corrupt_compressed_data"
        )
    return ArchiveRejected(
        f"{what}: corrupt {kind} ({type(exc).__name__}: {exc})", reason="corrupt_archive"
    )


class _ZstdFrames(FrameWalker):
    """Follows the zstd frame layout of the compressed bytes as they pass to the decoder.

    zstandard's ``stream_reader`` ends silently when its input stops inside a frame.
    Walking the frame layout (:class:`~exportpipe.worker.zstdframes.FrameWalker`) tells
    at the end of the input whether the last frame was complete; if not, the file is
    truncated. Content checksums and content sizes are verified by libzstd itself.

    Walking costs about a microsecond a block, nothing next to a real block's decoding,
    but a stream of empty or 1-byte blocks would make it the bottleneck (~2 MB/s): a
    stream whose blocks average under 16 bytes of output, beyond an allowance that
    covers the decoder's read-ahead, is refused.
    """

    _BLOCK_ALLOWANCE = 32_768
    _MIN_BLOCK_OUTPUT = 16

    def __init__(self, inner: Readable, meter: _Meter, *, what: str) -> None:
        super().__init__()
        self._inner = inner
        self._meter = meter
        self._what = what
        self._blocks = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        if data:
            self._walk(memoryview(data))
        elif not (self.at_boundary and self._frames):
            raise IntegrityError(
                f"{self._what}: the zstd stream ends inside a frame (truncated file)",
                reason="truncated",
            )
        return data

    def _not_a_frame(self) -> None:
        if not self._frames:
            raise ArchiveRejected(
                f"{self._what}: not a zstd stream", reason="corrupt_compressed_data"
            )
        raise ArchiveRejected(
            f"{self._what}: bytes after the end of the zstd stream (at byte "
            f"{self.walked - 4}) that are not a zstd frame",
            reason="trailing_garbage",
        )

    def _block(self, kind: int) -> None:
        self._blocks += 1
        if (
            self._blocks > self._BLOCK_ALLOWANCE
            and (self._blocks - self._BLOCK_ALLOWANCE) * self._MIN_BLOCK_OUTPUT
            > self._meter.output_bytes
        ):
            raise ArchiveRejected(
                f"{self._what}: {self._blocks} zstd blocks for "
                f"{self._meter.output_bytes} bytes of output: refusing a stream of "
                "near-empty blocks (slow to decode, never written by zstd)",
                reason="corrupt_compressed_data",
            )
        if kind == 3:
            raise ArchiveRejected(
                f"{self._what}: corrupt zstd block at byte {self.walked - 3}",
                reason="corrupt_compressed_data",
            )


class _StrictTarInfo(tarfile.TarInfo):
    """A tar header reader for which only a zero block ends the archive.

    ``tarfile`` ends an archive quietly at a missing, short or invalid header after the
    first one. Here a short or missing header is a truncated file and an invalid one a
    corrupt archive; a zero block (the end-of-archive marker) is the only end.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> _StrictTarInfo:
        stream = cast(Any, archive.fileobj)
        offset = stream.tell()
        buf = stream.read(_TAR_BLOCK)
        if len(buf) < _TAR_BLOCK:
            where = "inside a header" if buf else "without its end-of-archive marker"
            raise IntegrityError(
                f"the tar archive ends {where} (byte {offset + len(buf)}): truncated file",
                reason="truncated",
            )
        if buf == _TAR_ZERO_BLOCK:
            # The one real end: tarfile.TarFile.next() ends the archive on this error.
            raise cast(Any, tarfile).EOFHeaderError("end of file header")
        try:
            info = cls.frombuf(buf, archive.encoding or "utf-8", archive.errors or "strict")
        except tarfile.HeaderError as exc:
            raise ArchiveRejected(
                f"invalid tar header at byte {offset} ({exc})", reason="corrupt_archive"
            ) from None
        if info.type in _TAR_EXTENDED_TYPES and info.size > _MAX_TAR_EXTENDED_HEADER:
            raise ArchiveRejected(
                f"tar extended header at byte {offset} declares {info.size} bytes "
                f"(more than {_MAX_TAR_EXTENDED_HEADER})",
                reason="corrupt_archive",
            )
        info.offset = offset
        return cast(_StrictTarInfo, cast(Any, info)._proc_member(archive))


def _archive_member(
    stream: Any,
    meter: _Meter | None,
    *,
    path: str,
    what: str,
    eof: _EofWatch | None = None,
    kind: str = "compressed data",
) -> Member:
    """A member of a zip or tar, refused if it is itself an archive."""
    peek = _Peekable(_MemberStream(stream, meter, what=what, eof=eof, kind=kind))
    head = peek.peek(_PEEK)
    if path.lower().endswith(_ARCHIVE_SUFFIXES) or _is_archive_magic(head):
        raise ArchiveRejected(
            f"member {path!r} is itself an archive; nested archives are not extracted",
            reason="nested_archive",
        )
    return Member(path=path, stream=peek)


def _gzip_reader(source: Readable) -> Any:
    return igzip.IGzipFile(fileobj=source, mode="rb")  # type: ignore[no-untyped-call]


def zstd_reader(source: Readable) -> Any:
    """zstandard's decoder over ``source``, across frames (its own checks: checksums, sizes)."""
    return zstandard.ZstdDecompressor().stream_reader(
        cast(Any, source), read_size=1 << 20, read_across_frames=True, closefd=False
    )


def _tar_members(
    fileobj: Readable, limits: ExtractLimits, *, what: str, plain: TarEntry | None = None
) -> Iterator[Member]:
    """Members of a streamed tar (``fileobj`` is already metered), to its proven end.

    ``plain``: ``fileobj`` is the file's own bytes from this entry on (no outer
    compression), so each member can say where its entry starts in the source.
    """
    source = _EofWatch(fileobj)
    try:
        archive = tarfile.open(  # noqa: SIM115 - streamed, closed below
            fileobj=cast(Any, source),
            mode="r|",
            tarinfo=_StrictTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except Exception as exc:
        raise _named(_classify(exc, what, source, "tar archive"), what) from None
    seen: set[str] = set(plain.seen) if plain else set()
    entries = plain.entries if plain else 0
    try:
        while True:
            try:
                info = archive.next()
            except Exception as exc:
                raise _named(_classify(exc, what, source, "tar archive"), what) from None
            if info is None:
                break
            entries += 1
            if entries > limits.max_members:
                raise ArchiveRejected(
                    f"{what}: more than {limits.max_members} members", reason="too_many_members"
                )
            name = info.name
            for refused, kind, reason in _REFUSED_TAR_TYPES:
                if refused(info):
                    raise ArchiveRejected(f"{what}: member {name!r} is {kind}", reason=reason)
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
            member = _archive_member(
                inner, None, path=path, what=f"{what}:{path}", eof=source, kind="tar archive"
            )
            if plain is not None and not archive.pax_headers:
                # A global pax header would be lost by reading again from a later entry.
                # Asked for before the next member is read, so ``seen`` is as it is now.
                member.reentry = partial(
                    _tar_entry, plain.offset + info.offset, seen, path, entries - 1
                )
            yield member
        _check_after_tar_end(cast(Any, archive.fileobj), what=what, eof=source)
    finally:
        archive.close()


def _tar_entry(offset: int, seen: set[str], path: str, entries: int) -> TarEntry:
    return TarEntry(offset, frozenset(seen - {path}), entries)


def _check_after_tar_end(stream: Any, *, what: str, eof: _EofWatch) -> None:
    """Read past the end-of-archive marker to the end of the file: zeros only.

    tar pads its output with zero blocks; anything else (a second archive appended,
    garbage) would be silently ignored by tar readers, so it is refused. Reading to the
    end also makes a compressed tar's trailer (gzip CRC, zstd frame end) checked.
    """
    while True:
        try:
            rest: bytes = stream.read(1 << 20)
        except Exception as exc:
            raise _named(_classify(exc, what, eof, "tar archive"), what) from None
        if not rest:
            return
        if rest.count(0) != len(rest):
            raise ArchiveRejected(
                f"{what}: data after the tar end-of-archive marker (a second archive "
                "appended, or garbage)",
                reason="trailing_garbage",
            )


def _named(exc: ExportPipeError, what: str) -> ExportPipeError:
    """``exc`` with the file named in its message (tar header errors cannot know it)."""
    if exc.message.startswith(what):
        return exc
    return type(exc)(f"{what}: {exc.message}", reason=exc.reason)


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
        if not spooled:
            raise IntegrityError(f"{what}: the file is empty (0 bytes)", reason="truncated")
        spool.seek(0)
        try:
            archive = stack.enter_context(zipfile.ZipFile(spool))
            infos = archive.infolist()
        except MemoryError:
            raise
        except Exception as exc:  # any failure to parse third-party bytes is named
            raise ArchiveRejected(
                f"{what}: not a readable zip ({type(exc).__name__}: {exc})",
                reason="corrupt_archive",
            ) from None
        if len(infos) > limits.max_members:
            raise ArchiveRejected(
                f"{what}: {len(infos)} members, more than {limits.max_members}",
                reason="too_many_members",
            )
        _check_zip_directory(infos, limits, what=what)
        _check_zip_layout(infos, spool, archive.start_dir, what=what)
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
            except MemoryError:
                raise
            except Exception as exc:
                raise ArchiveRejected(
                    f"{what}: member {path!r} cannot be read ({exc})", reason="unsupported_member"
                ) from None
            with inner:
                # zipfile caps each member's output at its declared size, which
                # _check_zip_directory bounded; the meter watches the running total.
                meter.input_bytes = spooled
                sized = _DeclaredSize(inner, info.file_size, what=f"{what}:{path}")
                yield _archive_member(sized, meter, path=path, what=f"{what}:{path}")


class _DeclaredSize:
    """A zip member must produce exactly the size its directory entry declares.

    zipfile stops at the declared size, and checks the CRC-32 at the end of the data,
    but a deflate stream that ends early with a CRC-32 of what it did produce would
    pass as a shorter member.
    """

    def __init__(self, inner: Any, size: int, *, what: str) -> None:
        self._inner = inner
        self._left = size
        self._what = what

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._inner.read(size)
        self._left -= len(data)
        if not data and self._left:
            raise ArchiveRejected(
                f"{self._what}: {self._left} bytes fewer than its directory entry declares",
                reason="corrupt_archive",
            )
        return data


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


def _check_zip_layout(
    infos: list[zipfile.ZipInfo], spool: Any, start_dir: int, *, what: str
) -> None:
    """The entries must tile the file from byte 0 to the central directory.

    Each directory entry's local header is read back and must agree with it (name
    length taken from the local header's raw bytes, whatever the name's encoding;
    method; CRC-32 and sizes unless a data descriptor carries them, which is then
    checked instead). Bytes between entries would be data the directory does not list
    (a hidden entry, an appended archive); entries that overlap are the classic
    non-recursive bomb (Python only rejects them from 3.11.8 on).
    """
    pos = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        name = info.orig_filename
        if info.header_offset < pos:
            raise ArchiveRejected(f"{what}: overlapping zip entries", reason="overlapping_entries")
        if info.header_offset > pos:
            raise ArchiveRejected(
                f"{what}: bytes {pos}-{info.header_offset} are not listed in the central "
                "directory (a hidden entry, or another archive)",
                reason="corrupt_archive",
            )
        spool.seek(info.header_offset)
        raw = spool.read(_ZIP_LOCAL.size)
        if len(raw) < _ZIP_LOCAL.size:
            raise ArchiveRejected(f"{what}: {name!r}: cut local header", reason="corrupt_archive")
        sig, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = _ZIP_LOCAL.unpack(
            raw
        )
        descriptor = bool(flags & 0x8)
        if (
            sig != b"PK\x03\x04"
            or method != info.compress_type
            or (
                not descriptor
                and (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size)
                and _ZIP64_SIZES not in (csize, usize)
            )
        ):
            raise ArchiveRejected(
                f"{what}: the local header of {name!r} disagrees with the central directory",
                reason="corrupt_archive",
            )
        spool.seek(info.header_offset + _ZIP_LOCAL.size + name_len)
        zip64 = b"\x01\x00" in _extra_ids(spool.read(extra_len))
        pos = info.header_offset + _ZIP_LOCAL.size + name_len + extra_len + info.compress_size
        if descriptor:
            pos += _zip_descriptor_length(spool, pos, info, zip64=zip64, what=what)
    if infos and pos != start_dir:
        raise ArchiveRejected(
            f"{what}: bytes {pos}-{start_dir} before the central directory are not listed in it",
            reason="corrupt_archive",
        )


def _extra_ids(extra: bytes) -> list[bytes]:
    """The header ids of a zip extra field's records."""
    ids, i = [], 0
    while i + 4 <= len(extra):
        ids.append(extra[i : i + 2])
        i += 4 + int.from_bytes(extra[i + 2 : i + 4], "little")
    return ids


def _zip_descriptor_length(
    spool: Any, pos: int, info: zipfile.ZipInfo, *, zip64: bool, what: str
) -> int:
    """Length of the data descriptor at ``pos``, checked against the directory entry."""
    spool.seek(pos)
    raw = spool.read(24)
    base = 4 if raw[:4] == b"PK\x07\x08" else 0
    width = 8 if zip64 else 4
    length = base + 4 + 2 * width
    fields = raw[base : base + 4], raw[base + 4 : base + 4 + width], raw[base + 4 + width : length]
    expected = (info.CRC, info.compress_size, info.file_size)
    if len(raw) < length or tuple(int.from_bytes(f, "little") for f in fields) != expected:
        raise ArchiveRejected(
            f"{what}: the data descriptor of {info.orig_filename!r} disagrees with the "
            "central directory",
            reason="corrupt_archive",
        )
    return length


class _Unwrapped:
    """A member stream as the caller sees it: a download failure surfaces as itself."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._inner.read(size)
        except _SourceFailure as exc:
            raise exc.original from None


def classified(stream: Any, *, what: str) -> Readable:
    """``stream``'s reads with every decoder failure named, as :func:`iter_members` does.

    For a stream a resumed job decodes itself (ADR 0020): a truncated or damaged tail
    fails with the same :class:`~exportpipe.common.errors.IntegrityError` or
    :class:`~exportpipe.common.errors.ArchiveRejected` as a whole read would.
    """
    return _Unwrapped(_MemberStream(stream, None, what=what))


def _unwrapping(members: Callable[P, Iterator[Member]]) -> Callable[P, Iterator[Member]]:
    """``members`` as the caller sees them: a download failure surfaces as itself."""

    @wraps(members)
    def unwrapped(*args: P.args, **kwargs: P.kwargs) -> Iterator[Member]:
        try:
            for member in members(*args, **kwargs):
                yield replace(member, stream=_Unwrapped(member.stream))
        except _SourceFailure as exc:
            raise exc.original from None

    return unwrapped


@_unwrapping
def iter_members(
    source: Readable,
    *,
    compression: Compression | None,
    file_name: str,
    limits: ExtractLimits,
    starts: ReentryLog | None = None,
    tar: TarEntry | None = None,
) -> Iterator[Member]:
    """Yield the members of the file streamed by ``source``.

    Args:
        source: the raw (compressed) bytes of the downloaded file.
        compression: the job's declared compression, or ``None`` to detect it.
        file_name: the job's file name (names the member of a single compressed file).
        limits: the bounds to enforce.
        starts: for a gzip file, where to record member starts (ADR 0020); the gzip
            stream is then read by :class:`~exportpipe.worker.gzipmembers.GzipMembers`.
        tar: ``source`` is a plain tar read again from this entry (a resumed job); the
            members of a plain tar carry their own :class:`TarEntry` (``reentry``).

    Raises:
        ArchiveRejected: an unsafe or over-limit archive (see the module docstring).
        IntegrityError: compressed data that ends early.
    """
    meter = _Meter(limits)
    if tar is not None:
        # Everything before the entry was read (and counted) by an earlier attempt.
        compression, meter.input_bytes, meter.output_bytes = "tar", tar.offset, tar.offset
    what = output_name(file_name, None)
    peekable = _Peekable(source)
    head = peekable.peek(_PEEK)
    detected = compression is None
    if compression is None:
        compression = detect_compression(head)
    if not head and compression != "none":
        # No format here has an empty encoding: a 0-byte file is a cut one.
        raise IntegrityError(
            f"{what}: the file is empty (0 bytes), so it is not {compression} data",
            reason="truncated",
        )
    counted = _CountingInput(peekable, meter)
    if compression == "none":
        # No extraction: the file is its own single member (ratio 1, size cap applies).
        yield Member(what, _MemberStream(counted, meter, what=what), compression)
        return
    if compression == "zip":
        yield from _zip_members(counted, meter, limits, what=what)
        return
    if compression == "tar":
        yield from _tar_members(
            _MemberStream(counted, meter, what=what),
            limits,
            what=what,
            plain=tar or TarEntry(0, frozenset(), 0),
        )
        return
    _check_magic(head, "zstd" if compression == "zstd" else "gzip", what=what)
    if compression == "tar.gz":
        yield from _tar_members(
            _MemberStream(_gzip_reader(counted), meter, what=what), limits, what=what
        )
        return
    if compression == "gzip":
        stream = _gzip_reader(counted) if starts is None else GzipMembers(counted, log=starts)
    else:
        stream = zstd_reader(_ZstdFrames(counted, meter, what=what))
    decoded = _Peekable(_MemberStream(stream, meter, what=what))
    head = decoded.peek(_PEEK)
    if detected and _looks_like_tar(head):
        yield from _tar_members(decoded, limits, what=what)
        return
    path = output_name(file_name, compression)
    if _is_archive_magic(head):
        hint = ""
        if _looks_like_tar(head):
            # There is no declared "tar.zst"; left undeclared, a zstd tar is recognised.
            hint = (
                " (declare compression 'tar.gz')"
                if compression == "gzip"
                else " (leave compression unset, null, and it is recognised as a tar.zst)"
            )
        raise ArchiveRejected(
            f"{what}: the {compression} stream contains another archive{hint}",
            reason="nested_archive",
        )
    yield Member(path=path, stream=decoded, compression=compression)


def _check_magic(head: bytes, kind: str, *, what: str) -> None:
    """The first bytes must start a ``kind`` stream (a shorter prefix is a cut one)."""
    ok = head.startswith(_ZSTD_MAGIC) or (
        len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == _ZSTD_SKIPPABLE_TAIL
    )
    magic = _ZSTD_MAGIC
    if kind == "gzip":
        ok, magic = head.startswith(_GZIP_MAGIC), _GZIP_MAGIC
    if ok:
        return
    if len(head) < len(magic) and magic.startswith(head):
        raise IntegrityError(f"{what}: the file ends inside the {kind} header", reason="truncated")
    raise ArchiveRejected(f"{what}: not {kind} data", reason="corrupt_compressed_data")
