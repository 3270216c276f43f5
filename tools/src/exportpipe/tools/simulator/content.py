"""Deterministic file content: the same :class:`FileSpec` gives the same bytes anywhere.

Tests rebuild what a file *should* contain with :func:`build` (or every file of an
export with :func:`expected_files`) and compare it with what landed in S3. Nothing here
depends on time, the machine or the process: gzip and tar headers carry fixed times,
zip entries a fixed date, and every random choice comes from ``random.Random(seed)``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard

from exportpipe.tools.simulator.spec import ExportSpec, FileSpec

__all__ = [
    "ContentCache",
    "ExpectedFile",
    "FileContent",
    "build",
    "expected_files",
]

_WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "café",  # non-ASCII on purpose: content is UTF-8, not ASCII
    "naïve",
    "zürich",
    "ümlaut",
)
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileContent:
    """A built file.

    Attributes:
        raw: exactly the bytes the simulator serves (corruption included).
        listed_sha256 / listed_size: the sha256 and size of the file as it *should* be;
            what the listing advertises (unless the spec overrides or hides them).
        members: the logical content, after decompression and extraction of the file as
            it should be: ``(member name, bytes)`` pairs; a single plain or compressed
            file has one member named like the file without its compression suffix.
            ``None`` for a ``bomb`` (its content is deliberately too large to hold).
    """

    raw: bytes
    listed_sha256: str
    listed_size: int
    members: tuple[tuple[str, bytes], ...] | None

    @property
    def sha256(self) -> str:
        """sha256 of :attr:`raw` (differs from :attr:`listed_sha256` for ``flip_byte``)."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def cost(self) -> int:
        """Bytes of memory this object holds (for the cache's budget)."""
        return len(self.raw) + sum(len(b) for _, b in self.members or ())


@dataclass(frozen=True)
class ExpectedFile:
    """One file of an export as the listing describes it, with its content."""

    index: int
    spec: FileSpec
    content: FileContent

    @property
    def file_id(self) -> str:
        """The listed file id."""
        return self.spec.file_id


# ----------------------------------------------------------------------- records


def _jsonl(rng: random.Random, size: int, tag: str, bad: bool) -> bytes:
    out = io.BytesIO()
    i = 0
    bad_at = -1
    while out.tell() < size:
        if bad and bad_at < 0 and out.tell() >= size // 2:
            bad_at = i
            out.write(b'{"id": ' + str(i).encode() + b', "broken": \n')
        else:
            word = rng.choice(_WORDS)
            line = (
                f'{{"id":{i},"src":"{tag}","ts":"2024-01-{1 + i % 28:02d}T'
                f'{i % 24:02d}:{i % 60:02d}:00Z","amount":{rng.randint(0, 10**7) / 100},'
                f'"word":"{word}","ok":{"true" if rng.random() < 0.5 else "false"},'
                f'"n":{rng.getrandbits(40)}}}\n'
            )
            out.write(line.encode())
        i += 1
    if bad and bad_at < 0:  # tiny files: the broken record is the only one
        out.write(b'{"broken": \n')
    return out.getvalue()


def _csv(rng: random.Random, size: int, tag: str, bad: bool) -> bytes:
    out = io.BytesIO()
    out.write(b"id,src,amount,word,note\r\n")
    i = 0
    bad_done = False
    while out.tell() < size or (bad and not bad_done):
        word = rng.choice(_WORDS)
        if bad and not bad_done and out.tell() >= size // 2:
            out.write(f"{i},{tag},1,{word},extra,columns,here\r\n".encode())
            bad_done = True
        else:
            # A quoted field with a comma and a doubled quote keeps CSV parsers honest.
            note = f'"{word}, ""{rng.randint(0, 999)}"""' if i % 7 == 0 else word
            out.write(f"{i},{tag},{rng.randint(0, 10**7) / 100},{word},{note}\r\n".encode())
        i += 1
    return out.getvalue()


def _payload(spec: FileSpec, rng: random.Random, size: int, tag: str, bad: bool) -> bytes:
    fmt = spec.info.format
    if fmt == "jsonl":
        return _jsonl(rng, size, tag, bad)
    if fmt == "csv":
        return _csv(rng, size, tag, bad)
    return rng.randbytes(size)


# ----------------------------------------------------------------------- packing


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)  # its defaults: mtime 0, mode 0o644, no owner
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zero_stream(total: int) -> Iterator[bytes]:
    zeros = bytes(_CHUNK)
    left = total
    while left > 0:
        n = min(left, _CHUNK)
        yield zeros if n == _CHUNK else zeros[:n]
        left -= n


def _bomb(spec: FileSpec, stem: str) -> bytes:
    """A small file whose content expands to ``spec.bomb_bytes`` zeros."""
    compression = spec.info.compression
    total = spec.bomb_bytes
    if compression == "zstd":
        zcomp = zstandard.ZstdCompressor(level=19).compressobj(size=total)
        return b"".join([*(zcomp.compress(c) for c in _zero_stream(total)), zcomp.flush()])
    if compression == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            info = zipfile.ZipInfo(f"{stem}-0.csv", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                for chunk in _zero_stream(total):
                    member.write(chunk)
        return buf.getvalue()
    # gzip or tar.gz: deflate in a gzip wrapper (wbits=31 writes mtime 0).
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    if compression == "tar.gz":
        header = tarfile.TarInfo(f"{stem}/0.jsonl")
        header.size = total  # as _tar: TarInfo's fixed defaults for the rest
        head = header.tobuf(format=tarfile.PAX_FORMAT)
        pad = b"\0" * ((512 - total % 512) % 512) + b"\0" * 1024
        parts = [comp.compress(head), *(comp.compress(c) for c in _zero_stream(total))]
        return b"".join([*parts, comp.compress(pad), comp.flush()])
    return b"".join([*(comp.compress(c) for c in _zero_stream(total)), comp.flush()])


def _stem(name: str, suffix: str) -> str:
    base = name.rsplit("/", 1)[-1]
    if base.endswith(suffix) and len(base) > len(suffix):
        return base[: -len(suffix)]
    return base.split(".", 1)[0] or "file"


def build(spec: FileSpec, *, export_id: str = "") -> FileContent:
    """Build ``spec``'s bytes (deterministic in ``spec`` and ``export_id``).

    Args:
        spec: the file.
        export_id: written into every record, so files of different exports differ.
    """
    info = spec.info
    rng = random.Random(spec.seed)  # noqa: S311 - test data, not crypto
    tag = f"{export_id}/{spec.file_id}"
    stem = _stem(spec.name, info.suffix)
    bad = spec.corrupt == "bad_record"
    members: list[tuple[str, bytes]] | None = None  # a bomb's are too large to hold
    if spec.corrupt == "bomb":
        raw = _bomb(spec, stem)
    elif info.archive:
        ext = "jsonl" if info.format == "jsonl" else "csv"
        per = max(1, spec.size_bytes // spec.members)
        members = [
            (
                f"{stem}-{k}.{ext}" if info.compression == "zip" else f"{stem}/{k}.{ext}",
                _payload(spec, rng, per, f"{tag}#{k}", bad and k == spec.members // 2),
            )
            for k in range(spec.members)
        ]
        if spec.corrupt == "path_escape":
            name, data = members[-1]
            members[-1] = (f"../{name.rsplit('/', 1)[-1]}", data)
        packed = _zip(members) if info.compression == "zip" else _tar(members)
        raw = _gzip(packed) if info.compression == "tar.gz" else packed
    else:
        member_name = spec.name.rsplit("/", 1)[-1]
        for suffix in (".gz", ".zst"):
            if info.compression != "none" and member_name.endswith(suffix):
                member_name = member_name[: -len(suffix)]
        data = _payload(spec, rng, spec.size_bytes, tag, bad)
        members = [(member_name, data)]
        if info.compression == "gzip":
            raw = _gzip(data)
        elif info.compression == "zstd":
            raw = zstandard.ZstdCompressor(level=3).compress(data)
        else:
            raw = data

    listed_sha = hashlib.sha256(raw).hexdigest()
    listed_size = len(raw)
    if spec.corrupt == "flip_byte" and raw:
        pos = len(raw) // 2
        raw = raw[:pos] + bytes([raw[pos] ^ 0xFF]) + raw[pos + 1 :]
    return FileContent(
        raw=raw,
        listed_sha256=listed_sha,
        listed_size=listed_size,
        members=None if members is None else tuple(members),
    )


def expected_files(export: ExportSpec) -> Iterator[ExpectedFile]:
    """Every file of ``export`` with its content, in listing order (built lazily)."""
    for index in range(export.count):
        spec = export.file(index)
        yield ExpectedFile(index=index, spec=spec, content=build(spec, export_id=export.export_id))


class ContentCache:
    """Built files kept in memory up to a byte budget (least recently used evicted).

    Listing a page needs every file's size and sha256, and downloads need the bytes; a
    small export is built once, a large one is rebuilt on demand (it is deterministic,
    so rebuilding gives the same bytes). Sizes and digests are kept separately for every
    file listed, since they are tiny.
    """

    def __init__(self, budget_bytes: int = 256 * 2**20) -> None:
        self._budget = budget_bytes
        self._used = 0
        self._items: OrderedDict[tuple[str, str], FileContent] = OrderedDict()
        self._meta: dict[tuple[str, str], tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._building: dict[tuple[str, str], threading.Lock] = {}

    def get(self, export_id: str, spec: FileSpec) -> FileContent:
        """The content of ``spec`` in ``export_id``, built at most once at a time."""
        key = (export_id, spec.file_id)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._items.get(key)
                if hit is not None:
                    return hit
            content = build(spec, export_id=export_id)
            with self._lock:
                self._building.pop(key, None)
                self._meta[key] = (content.listed_size, content.listed_sha256)
                if content.cost <= self._budget:
                    self._items[key] = content
                    self._used += content.cost
                    while self._used > self._budget:
                        _, old = self._items.popitem(last=False)
                        self._used -= old.cost
            return content

    def meta(self, export_id: str, spec: FileSpec) -> tuple[int, str]:
        """``(listed_size, listed_sha256)`` of ``spec``, building it if never seen."""
        with self._lock:
            known = self._meta.get((export_id, spec.file_id))
        if known is not None:
            return known
        content = self.get(export_id, spec)
        return content.listed_size, content.listed_sha256
