from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zipfile
import zlib
from typing import Any

import pytest
import zstandard

from exportpipe.common.errors import ArchiveRejected, IntegrityError
from exportpipe.worker.extract import (
    ExtractLimits,
    detect_compression,
    iter_members,
    output_name,
    safe_member_path,
)

LIMITS = ExtractLimits(
    max_members=50,
    max_total_output_bytes=64 * 1024 * 1024,
    max_compression_ratio=100.0,
    ratio_check_after_bytes=4 * 1024 * 1024,
)
TEXT = b"".join(b'{"n": %d}\n' % i for i in range(5000))


def _extract(
    data: bytes,
    compression: str | None,
    file_name: str = "export.bin",
    limits: ExtractLimits = LIMITS,
    read_size: int = 65536,
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for member in iter_members(
        io.BytesIO(data), compression=compression, file_name=file_name, limits=limits
    ):
        buf = bytearray()
        while chunk := member.stream.read(read_size):
            assert len(chunk) <= read_size  # every decompression call is bounded
            buf += chunk
        out[member.path] = bytes(buf)
    return out


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], **kw: Any) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, **kw) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


# -- supported compressions -------------------------------------------------------


def test_gzip_multi_member() -> None:
    data = gzip.compress(TEXT[:1000]) + gzip.compress(TEXT[1000:])
    assert _extract(data, "gzip", "part.jsonl.gz") == {"part.jsonl": TEXT}


def test_zstd_multi_frame() -> None:
    cctx = zstandard.ZstdCompressor()
    data = cctx.compress(TEXT[:777]) + cctx.compress(TEXT[777:])
    assert _extract(data, "zstd", "part.jsonl.zst") == {"part.jsonl": TEXT}


def test_none_keeps_the_name() -> None:
    assert _extract(TEXT, "none", "dir/part.jsonl") == {"part.jsonl": TEXT}


def test_zip_members() -> None:
    data = _zip([("a/one.jsonl", TEXT), ("two.jsonl", b'{"x": 1}\n'), ("a/", b"")])
    assert _extract(data, "zip") == {"a/one.jsonl": TEXT, "two.jsonl": b'{"x": 1}\n'}


def test_tar_and_tar_gz_members() -> None:
    entries = [(_file("./x/one.csv"), b"a,b\n1,2\n"), (_file("two.csv"), b"c\n3\n")]
    expected = {"x/one.csv": b"a,b\n1,2\n", "two.csv": b"c\n3\n"}
    assert _extract(_tar(entries), "tar") == expected
    assert _extract(_tar(entries, "w:gz"), "tar.gz") == expected


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (gzip.compress(TEXT), "gzip"),
        (zstandard.ZstdCompressor().compress(TEXT), "zstd"),
        (_zip([("f", TEXT)]), "zip"),
        (_tar([(_file("f"), TEXT)]), "tar"),
        (TEXT, "none"),
    ],
)
def test_detects_by_magic(data: bytes, kind: str) -> None:
    assert detect_compression(data[:512]) == kind
    out = _extract(data, None, "f.gz")
    assert list(out.values()) == [TEXT]


def test_detected_gzip_holding_a_tar_is_tar_gz() -> None:
    data = _tar([(_file("in.jsonl"), TEXT)], "w:gz")
    assert _extract(data, None) == {"in.jsonl": TEXT}


def test_member_path_normalisation() -> None:
    assert safe_member_path("./a//b/./c.json") == "a/b/c.json"
    assert output_name("data/part-1.jsonl.gz", "gzip") == "part-1.jsonl"
    assert output_name("part-1.ZST", "zstd") == "part-1"
    assert output_name("blob", "gzip") == "blob"


# -- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil", "a/../../evil", "/etc/passwd", "a\\..\\evil", "C:evil", "c:/x", "a/\x01b"]
)
def test_zip_slip_and_bad_names_refused(name: str) -> None:
    data = _zip([("ok.txt", b"fine"), (name, b"evil")])
    with pytest.raises(ArchiveRejected) as info:
        _extract(data, "zip")
    assert info.value.reason in ("path_escape", "bad_member_name")


def test_tar_path_escape_refused() -> None:
    with pytest.raises(ArchiveRejected) as info:
        _extract(_tar([(_file("../../etc/cron.d/x"), b"boom")]), "tar")
    assert info.value.reason == "path_escape"


def _link(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (_link("link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (_link("hard", tarfile.LNKTYPE, "data.txt"), "hardlink"),
        (_link("dev", tarfile.CHRTYPE), "device"),
        (_link("blk", tarfile.BLKTYPE), "device"),
        (_link("fifo", tarfile.FIFOTYPE), "device"),
    ],
)
def test_tar_links_and_devices_refused(info: tarfile.TarInfo, reason: str) -> None:
    data = _tar([(_file("data.txt"), b"x"), (info, None)])
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "tar")
    assert raised.value.reason == reason


def test_zip_symlink_refused() -> None:
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(ArchiveRejected) as raised:
        _extract(_zip([(info, b"/etc/passwd")]), "zip")
    assert raised.value.reason == "symlink"


def test_encrypted_zip_entry_refused() -> None:
    data = bytearray(_zip([("secret.txt", b"not really encrypted")]))
    # zipfile cannot write encrypted entries: set the "encrypted" flag bit in the local
    # header and the central directory entry, as an encrypting writer would.
    data[6] |= 0x1
    data[data.index(b"PK\x01\x02") + 8] |= 0x1
    data = bytes(data)
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "zip")
    assert raised.value.reason == "encrypted"


@pytest.mark.parametrize(
    "inner",
    [
        ("inner.zip", _zip([("x", b"y")])),
        ("data.bin", gzip.compress(b"hidden")),
        ("data.tar", _tar([(_file("x"), b"y")])),
    ],
)
def test_nested_archives_refused(inner: tuple[str, bytes]) -> None:
    with pytest.raises(ArchiveRejected) as raised:
        _extract(_zip([inner]), "zip")
    assert raised.value.reason == "nested_archive"
    with pytest.raises(ArchiveRejected):
        _extract(_tar([(_file(inner[0]), inner[1])]), "tar")


def test_gzip_of_an_archive_refused_when_declared_gzip() -> None:
    with pytest.raises(ArchiveRejected) as raised:
        _extract(gzip.compress(_zip([("x", b"y")])), "gzip", "f.gz")
    assert raised.value.reason == "nested_archive"


def test_too_many_members_refused() -> None:
    many = [(f"f{i}.txt", b"x") for i in range(LIMITS.max_members + 1)]
    with pytest.raises(ArchiveRejected) as raised:
        _extract(_zip(many), "zip")
    assert raised.value.reason == "too_many_members"
    tar = _tar([(_file(n), d) for n, d in many])
    with pytest.raises(ArchiveRejected) as raised:
        _extract(tar, "tar")
    assert raised.value.reason == "too_many_members"


def test_total_output_cap() -> None:
    limits = ExtractLimits(max_total_output_bytes=100_000, max_compression_ratio=1e9)
    noise = os.urandom(60_000)
    with pytest.raises(ArchiveRejected) as raised:
        _extract(gzip.compress(noise + noise), "gzip", limits=limits)
    assert raised.value.reason == "output_too_large"
    with pytest.raises(ArchiveRejected):
        _extract(_zip([("a", noise), ("b", noise)]), "zip", limits=limits)


def test_zip_bomb_1000_to_1_refused_from_its_directory() -> None:
    zeros = bytes(16 * 1024 * 1024)
    data = _zip([("bomb.jsonl", zeros)])
    assert len(zeros) / len(data) > 900
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "zip")
    assert raised.value.reason == "compression_ratio"


def test_zip_member_cannot_inflate_past_its_declared_size() -> None:
    zeros = bytes(16 * 1024 * 1024)
    data = bytearray(_zip([("bomb.jsonl", zeros)]))
    # A directory that lies (declares 1 MiB): inflating stops there and the CRC fails.
    declared = (1 << 20).to_bytes(4, "little")
    data[22:26] = declared
    cd = data.index(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = declared
    seen = 0

    def inflate_all() -> None:
        nonlocal seen
        for member in iter_members(
            io.BytesIO(bytes(data)), compression="zip", file_name="x.zip", limits=LIMITS
        ):
            while chunk := member.stream.read(65536):
                seen += len(chunk)

    with pytest.raises(ArchiveRejected) as raised:
        inflate_all()
    assert seen <= 1 << 20
    assert raised.value.reason == "corrupt_compressed_data"


def test_gzip_bomb_refused_while_streaming() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = comp.compress(bytes(32 * 1024 * 1024)) + comp.flush()
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "gzip", "bomb.gz")
    assert raised.value.reason == "compression_ratio"


def test_zstd_bomb_refused_while_streaming() -> None:
    data = zstandard.ZstdCompressor(level=19).compress(bytes(32 * 1024 * 1024))
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "zstd", "bomb.zst")
    assert raised.value.reason == "compression_ratio"


def test_overlapping_zip_entries_refused() -> None:
    payload = _zip([("a.txt", b"A" * 1000)])
    zf = zipfile.ZipFile(io.BytesIO(payload))
    first = zf.infolist()[0]
    # Build a central directory with two entries pointing at the same local header.
    cd_offset = payload.index(b"PK\x01\x02")
    cd_entry = payload[cd_offset : payload.index(b"PK\x05\x06")]
    second = cd_entry.replace(b"a.txt", b"b.txt")
    eocd = bytearray(payload[payload.index(b"PK\x05\x06") :])
    eocd[8:10] = (2).to_bytes(2, "little")
    eocd[10:12] = (2).to_bytes(2, "little")
    eocd[12:16] = (len(cd_entry) * 2).to_bytes(4, "little")
    data = payload[:cd_offset] + cd_entry + second + bytes(eocd)
    assert first.header_offset == 0
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "zip")
    assert raised.value.reason == "overlapping_entries"


def test_duplicate_members_refused() -> None:
    data = _tar([(_file("a.txt"), b"1"), (_file("./a.txt"), b"2")])
    with pytest.raises(ArchiveRejected) as raised:
        _extract(data, "tar")
    assert raised.value.reason == "duplicate_member"


def test_truncated_gzip_is_an_integrity_error() -> None:
    data = gzip.compress(os.urandom(200_000))
    with pytest.raises(IntegrityError) as raised:
        _extract(data[: len(data) // 2], "gzip", "x.gz")
    assert raised.value.reason == "truncated"


def test_corrupt_gzip_is_refused() -> None:
    data = bytearray(gzip.compress(TEXT))
    data[30:60] = b"\xff" * 30
    with pytest.raises((ArchiveRejected, IntegrityError)):
        _extract(bytes(data), "gzip", "x.gz")


def test_empty_zip_yields_nothing() -> None:
    assert _extract(_zip([]), "zip") == {}
