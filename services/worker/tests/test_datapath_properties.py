"""Property-based tests of the extract + validate path against reference decoders.

For any bytes, any declared compression and any content format, the worker's data path
either yields exactly what the standard decoders yield (stdlib ``gzip``, ``tarfile``,
``zipfile``, zstandard's frame decoder, ``csv`` in strict mode, ``json``) or raises a
classified :class:`~exportpipe.common.errors.ExportPipeError`. It may refuse more than a
reference (a cut tar that ``tarfile`` reads as shorter, nested archives, unsafe names):
what it must never do is accept something else, or fail in an unclassified way, or hang.

Examples are derandomized so ``make test`` is repeatable; set
``EXPORTPIPE_PROPERTY_EXAMPLES=5000`` to explore with fresh random examples (the
coverage-guided fuzzer under ``bench/fuzz/`` goes further).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tarfile
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exportpipe.common.errors import ExportPipeError
from exportpipe.worker.extract import (
    ExtractLimits,
    detect_compression,
    iter_members,
    output_name,
    safe_member_path,
)
from exportpipe.worker.validate import validator_for

EXPLORE = os.environ.get("EXPORTPIPE_PROPERTY_EXAMPLES")
SETTINGS = settings(
    max_examples=int(EXPLORE or 60),
    derandomize=EXPLORE is None,
    database=None,
    # Per example; generous because the machine running the suite may be loaded.
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMEOUT = 120 if EXPLORE is None else 24 * 3600  # the whole test, every example
LIMITS = ExtractLimits(
    max_members=64, max_total_output_bytes=8 << 20, ratio_check_after_bytes=8 << 20
)
MAX_LINE = 1 << 20
COMPRESSIONS = [None, "none", "gzip", "zstd", "tar", "tar.gz", "zip"]
FORMATS = ["binary", "jsonl", "csv"]
REAL = sorted((Path(__file__).parent / "data" / "real").iterdir())
FILE_NAME = "part.dat"

Result = dict[str, tuple[bytes, int | None]]


class Refused(Exception):
    """The reference decoders refuse the input."""


# -- the path under test ------------------------------------------------------------


def datapath(data: bytes, compression: str | None, fmt: str) -> Result:
    """What the worker would commit: each member's bytes and record count."""
    out: Result = {}
    for member in iter_members(
        io.BytesIO(data), compression=compression, file_name=FILE_NAME, limits=LIMITS
    ):
        validator = validator_for(fmt, what=member.path, max_line_bytes=MAX_LINE)  # type: ignore[arg-type]
        buf = bytearray()
        while chunk := member.stream.read(1024):
            validator.feed(chunk)
            buf += chunk
        out[member.path] = (bytes(buf), validator.finish())
    return out


# -- the references -------------------------------------------------------------------


def ref_gzip(data: bytes) -> bytes:
    return gzip.decompress(data)


def ref_zstd(data: bytes) -> bytes:
    out = []
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out.append(frame.decompress(data))
        if not frame.eof:
            raise Refused("zstd frame cut")
        data = frame.unused_data
    return b"".join(out)


def ref_tar(data: bytes) -> dict[str, bytes]:
    members = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for info in archive:
            if info.isdir():
                continue
            if not info.isreg():
                raise Refused("not a regular member")
            handle = archive.extractfile(info)
            assert handle is not None
            members[safe_member_path(info.name)] = handle.read()
    return members


def ref_zip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            safe_member_path(i.orig_filename): archive.read(i)
            for i in archive.infolist()
            if not i.is_dir()
        }


def _looks_like_tar(data: bytes) -> bool:
    return len(data) >= 262 and data[257:262] == b"ustar"


def ref_members(data: bytes, compression: str | None) -> dict[str, bytes]:
    detected = compression is None
    if compression is None:
        compression = detect_compression(data[:512])
    if compression == "none":
        return {output_name(FILE_NAME, None): data}
    if compression == "tar":
        return ref_tar(data)
    if compression == "tar.gz":
        return ref_tar(ref_gzip(data))
    if compression == "zip":
        return ref_zip(data)
    plain = ref_gzip(data) if compression == "gzip" else ref_zstd(data)
    if detected and _looks_like_tar(plain):
        return ref_tar(plain)
    return {output_name(FILE_NAME, compression): plain}


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def ref_jsonl(data: bytes) -> int:
    records = 0
    for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n"):
        if not line.strip(b" \t\r\n"):
            continue
        if not isinstance(json.loads(line.decode("utf-8"), parse_constant=_no_constants), dict):
            raise Refused("not an object")
        records += 1
    return records


def ref_csv(data: bytes) -> int:
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    rows = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    if not rows or not any(f.strip() for f in rows[0]) or any(len(r) != len(rows[0]) for r in rows):
        raise Refused("bad csv")
    return len(rows) - 1


def reference(data: bytes, compression: str | None, fmt: str) -> Result:
    try:
        members = ref_members(data, compression)
        out: Result = {}
        for path, content in members.items():
            records = None
            if fmt == "jsonl":
                records = ref_jsonl(content)
            elif fmt == "csv":
                records = ref_csv(content)
            out[path] = (content, records)
        return out
    except Refused:
        raise
    except Exception as exc:  # whatever a reference raises means "not valid"
        raise Refused(f"{type(exc).__name__}: {exc}") from exc


def check(data: bytes, compression: str | None, fmt: str) -> Result | None:
    """The property: accepted means equal to the reference; refused means classified."""
    try:
        ours = datapath(data, compression, fmt)
    except ExportPipeError as exc:
        if not exc.reason.isidentifier() or not exc.reason.islower():
            pytest.fail(f"a refusal without a snake_case reason: {exc!r}")
        return None
    try:
        expected = reference(data, compression, fmt)
    except Refused as exc:
        pytest.fail(f"accepted what the reference refuses ({exc}): {ours!r:.300}")
    assert ours == expected
    return ours


# -- inputs ---------------------------------------------------------------------------

compressions = st.sampled_from(COMPRESSIONS)
formats = st.sampled_from(FORMATS)
# No letter of an archive suffix such as ".xz" or ".7z": those names are refused by rule.
names = st.lists(
    st.text("abcdmn0123_-.", min_size=1, max_size=8).filter(lambda n: n.strip(".")),
    min_size=1,
    max_size=3,
    unique=True,
)
json_values = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
cells = st.text(alphabet='ab ,"\n\r\xe9', max_size=6)


@st.composite
def contents(draw: st.DrawFn, fmt: str) -> bytes:
    """Valid content of ``fmt`` (text only, so never mistaken for an archive)."""
    if fmt == "jsonl":
        objects = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
        rows = draw(st.lists(objects | st.builds(lambda o: {"n": o}, objects), max_size=5))
        bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
        return bom + b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    if fmt == "csv":
        width = draw(st.integers(1, 3))
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        writer.writerow([f"h{i}" for i in range(width)])
        for _ in range(draw(st.integers(0, 5))):
            writer.writerow(draw(st.lists(cells, min_size=width, max_size=width)))
        return out.getvalue().encode()
    return draw(st.text("abc\n", max_size=200)).encode()


def pack(members: dict[str, bytes], compression: str) -> bytes:
    """Members packed by the standard library's writers (and zstandard)."""
    if compression in ("tar", "tar.gz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        tar = buf.getvalue()
        return gzip.compress(tar) if compression == "tar.gz" else tar
    if compression == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return buf.getvalue()
    (data,) = members.values()
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(data)
    return data


@st.composite
def valid_files(draw: st.DrawFn) -> tuple[bytes, str, str]:
    compression = draw(st.sampled_from(COMPRESSIONS[1:]))
    fmt = draw(formats)
    paths = draw(names) if compression in ("tar", "tar.gz", "zip") else ["x"]
    members = {p: draw(contents(fmt)) for p in paths}
    return pack(members, compression), compression, fmt


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[bytes, str | None, str]:
    """A valid file (generated, or a real archive) cut, flipped, spliced or extended."""
    if draw(st.booleans()):
        data, compression, fmt = draw(valid_files())
        declared: str | None = compression
    else:
        data, declared, fmt = draw(st.sampled_from(REAL)).read_bytes(), None, draw(formats)
    blob = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "append", "zero"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if kind == "cut":
            del blob[at:]
        elif kind == "flip" and blob:
            blob[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del blob[at : at + draw(st.integers(1, 64))]
        elif kind == "append":
            blob += draw(st.binary(min_size=1, max_size=600))
        elif kind == "zero":
            blob[at : at + 512] = bytes(len(blob[at : at + 512]))
    if draw(st.booleans()):
        declared = draw(compressions)
    return bytes(blob), declared, fmt


# -- the properties -------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
@SETTINGS
@given(data=st.binary(max_size=2048), compression=compressions, fmt=formats)
def test_any_bytes_are_decoded_as_the_reference_does_or_refused_by_name(
    data: bytes, compression: str | None, fmt: str
) -> None:
    check(data, compression, fmt)


@pytest.mark.timeout(TIMEOUT)
@SETTINGS
@given(case=mutated_files())
def test_damaged_archives_are_decoded_as_the_reference_does_or_refused_by_name(
    case: tuple[bytes, str | None, str],
) -> None:
    check(*case)


@pytest.mark.timeout(TIMEOUT)
@SETTINGS
@given(case=valid_files())
def test_valid_files_from_standard_writers_are_accepted(case: tuple[bytes, str, str]) -> None:
    assert check(*case) is not None, "a valid file was refused"


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
@pytest.mark.parametrize("fmt", ["binary"])
def test_real_archives_agree_with_the_reference(path: Path, fmt: str) -> None:
    data = path.read_bytes()
    if path.name == "real-latin1-name.tar":
        assert check(data, None, fmt) is None  # refused: a name that is not UTF-8
        return
    assert check(data, None, fmt)
