from __future__ import annotations

import contextlib
import gzip
import io
import os
import random
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
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


# -- every format proves its own end (issue #15, ADR 0013) ------------------------

REAL = Path(__file__).parent / "data" / "real"  # made by GNU tar, Info-ZIP, gzip, zstd


def _real(name: str) -> bytes:
    return (REAL / name).read_bytes()


def _refusal(data: bytes, compression: str | None, file_name: str = "f.bin") -> tuple[str, str]:
    """(error class, reason) of a refused file; fails the test if it was accepted."""
    with pytest.raises((ArchiveRejected, IntegrityError)) as raised:
        _extract(data, compression, file_name)
    return type(raised.value).__name__, raised.value.reason


TRUNCATED = ("IntegrityError", "truncated")


def _zstd_blocks(data: bytes, **kw: Any) -> bytes:
    """A zstd frame of several blocks (the level-1 compressor cuts 128 KiB blocks)."""
    return zstandard.ZstdCompressor(level=1, **kw).compress(data)


RANDOMISH = b"".join(
    b'{"n": %d, "r": "%s"}\n' % (i, os.urandom(8).hex().encode()) for i in range(20000)
)


@pytest.mark.parametrize("checksum", [True, False])
def test_zstd_cut_anywhere_inside_a_frame_is_truncated(checksum: bool) -> None:
    frame = _zstd_blocks(RANDOMISH, write_checksum=checksum)
    assert len(frame) > 100_000
    for cut in (5, 12, len(frame) // 3, len(frame) // 2, len(frame) - 5, len(frame) - 1):
        assert _refusal(frame[:cut], "zstd", "x.jsonl.zst") == TRUNCATED, cut


def test_zstd_cut_inside_a_later_frame_is_truncated() -> None:
    one, two = _zstd_blocks(RANDOMISH[:50000]), _zstd_blocks(RANDOMISH[50000:])
    for cut in (2, 4, 6, len(two) // 2):
        assert _refusal(one + two[:cut], "zstd", "x.zst") == TRUNCATED, cut
    # A cut exactly between frames leaves a valid stream (the listing's size catches it).
    assert _extract(one, "zstd", "x.zst") == {"x": RANDOMISH[:50000]}


def test_zstd_checksum_and_content_size_are_verified() -> None:
    frame = bytearray(_zstd_blocks(TEXT, write_checksum=True, write_content_size=True))
    bad_sum = bytes(frame[:-1]) + bytes([frame[-1] ^ 1])
    assert _refusal(bad_sum, "zstd", "x.zst") == ("ArchiveRejected", "corrupt_compressed_data")
    # The frame header's content size (FCS) says one byte more than the frame holds.
    fhd = frame[4]
    single_segment = (fhd >> 5) & 1
    width = (single_segment, 2, 4, 8)[fhd >> 6]
    at = 5 + (0 if single_segment else 1)  # after the window descriptor, if any
    raw = int.from_bytes(frame[at : at + width], "little")
    assert raw + (256 if width == 2 else 0) == len(TEXT)
    frame[at : at + width] = (raw + 1).to_bytes(width, "little")
    assert _refusal(bytes(frame), "zstd", "x.zst")[1] in ("corrupt_compressed_data", "truncated")


def test_zstd_skippable_frames_and_many_frames_are_one_stream() -> None:
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    cctx = zstandard.ZstdCompressor()
    data = skippable + cctx.compress(TEXT[:10]) + cctx.compress(b"") + cctx.compress(TEXT[10:])
    assert _extract(data, "zstd", "x.zst") == {"x": TEXT}
    assert _refusal(skippable[:6], "zstd", "x.zst") == TRUNCATED
    assert _refusal(skippable + cctx.compress(TEXT)[:9], "zstd", "x.zst") == TRUNCATED


def test_zstd_trailing_garbage_has_its_own_reason() -> None:
    data = zstandard.ZstdCompressor().compress(TEXT) + b"not zstd at all"
    assert _refusal(data, "zstd", "x.zst") == ("ArchiveRejected", "trailing_garbage")


def test_gzip_trailing_garbage_has_its_own_reason() -> None:
    data = gzip.compress(TEXT) + b"this is not gzip"
    assert _refusal(data, "gzip", "x.gz") == ("ArchiveRejected", "trailing_garbage")
    # NUL padding after a member is what gzip(1) and Python's gzip accept: so do we.
    assert _extract(gzip.compress(TEXT) + bytes(100), "gzip", "x.gz") == {"x": TEXT}


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar", "tar.gz", "zip"])
def test_a_zero_byte_file_is_not_an_empty_stream(compression: str) -> None:
    assert _refusal(b"", compression, "x.gz") == TRUNCATED


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar.gz"])
def test_not_that_format_at_all_is_refused(compression: str) -> None:
    assert _refusal(b"hello, world\n" * 10, compression, "x")[1] == "corrupt_compressed_data"


def test_gzip_member_trailers_are_checked() -> None:
    data = gzip.compress(TEXT) + gzip.compress(TEXT)
    crc_at = len(data) - 8
    bad_crc = data[:crc_at] + bytes([data[crc_at] ^ 1]) + data[crc_at + 1 :]
    assert _refusal(bad_crc, "gzip", "x.gz") == ("ArchiveRejected", "corrupt_compressed_data")
    bad_size = data[:-1] + bytes([data[-1] ^ 1])
    assert _refusal(bad_size, "gzip", "x.gz") == ("ArchiveRejected", "corrupt_compressed_data")
    first = len(gzip.compress(TEXT))
    for cut in (first + 1, first + 5, first + 20, len(data) - 4, len(data) - 1):
        assert _refusal(data[:cut], "gzip", "x.gz") == TRUNCATED, cut


def _three_member_tar(mode: str = "w") -> bytes:
    return _tar(
        [(_file("a.jsonl"), TEXT[:3000]), (_file("b.jsonl"), TEXT[:700]), (_file("c"), b"z")],
        mode,
    )


def test_tar_cut_at_any_block_is_never_a_clean_end() -> None:
    data = _three_member_tar()
    # Where the end-of-archive marker (the first zero block after the last member) starts.
    end = 512 + 3072 + 512 + 1024 + 512 + 512
    assert data[end : end + 1024] == bytes(1024)
    for cut in [*range(512, end + 1, 512), 100, 600, 3000, end - 1, end + 100]:
        assert _refusal(data[:cut], "tar", "x.tar") == TRUNCATED, cut
    # The marker is there: every member is complete, so a lone zero block is an end.
    assert len(_extract(data[: end + 512], "tar", "x.tar")) == 3


def test_tar_bad_header_after_the_first_is_corrupt_not_an_end() -> None:
    data = bytearray(_three_member_tar())
    second = 512 + 3072
    assert data[second : second + 7] == b"b.jsonl"
    data[second + 148] ^= 1  # the header checksum field
    assert _refusal(bytes(data), "tar", "x.tar") == ("ArchiveRejected", "corrupt_archive")
    data[second + 148] ^= 1
    data[second + 10] ^= 0x40  # a name byte: the stored checksum no longer matches
    assert _refusal(bytes(data), "tar", "x.tar") == ("ArchiveRejected", "corrupt_archive")


def test_tar_data_after_the_end_marker_is_refused() -> None:
    data = _three_member_tar()
    assert _refusal(data + b"\x01" + bytes(511), "tar", "x.tar") == (
        "ArchiveRejected",
        "trailing_garbage",
    )
    # Two archives end to end (cat a.tar b.tar) would hide the second one's members.
    assert _refusal(data + data, "tar", "x.tar")[1] == "trailing_garbage"


@pytest.mark.parametrize("wrap", ["tar.gz", "tar.zst"])
def test_compressed_tar_cut_or_corrupt_is_refused(wrap: str) -> None:
    plain = _three_member_tar()

    def pack(tar: bytes) -> bytes:
        if wrap == "tar.gz":
            return gzip.compress(tar)
        return zstandard.ZstdCompressor(write_checksum=True).compress(tar)

    declared = "tar.gz" if wrap == "tar.gz" else None  # tar.zst is recognised by magic
    assert len(_extract(pack(plain), declared, "x")) == 3
    second = 512 + 3072
    # Complete compressed streams whose tar inside is cut, or has a bad second header.
    assert _refusal(pack(plain[: second + 100]), declared, "x") == TRUNCATED
    assert _refusal(pack(plain[:second]), declared, "x") == TRUNCATED
    bad = bytearray(plain)
    bad[second + 148] ^= 1
    assert _refusal(pack(bytes(bad)), declared, "x") == ("ArchiveRejected", "corrupt_archive")
    # The compressed stream itself cut after the tar's end marker (its trailer lost).
    packed = pack(plain)
    assert _refusal(packed[:-3], declared, "x") == TRUNCATED


def test_real_archives_from_real_tools() -> None:
    for name in ("real-gnu.tar", "real-pax.tar", "real.tar.gz", "real.tar.zst"):
        out = _extract(_real(name), None, name)
        assert {"events.jsonl", "table.csv"} <= set(out), name
        assert out["events.jsonl"].count(b"\n") == 150
    assert set(_extract(_real("real-gnu.tar"), "tar")) == {
        "events.jsonl",
        "table.csv",
        "sub/more.csv",
    }
    zipped = _extract(_real("real-infozip.zip"), "zip")
    assert zipped["sub/more.csv"] == zipped["table.csv"]
    assert set(_extract(_real("real-descriptor.zip"), "zip")) == {"events.jsonl", "table.csv"}
    assert _extract(_real("events.jsonl.gz"), "gzip", "events.jsonl.gz") == _extract(
        _real("events.jsonl.zst"), "zstd", "events.jsonl.zst"
    )
    gz = _extract(_real("table-multimember.csv.gz"), "gzip", "t.csv.gz")["t.csv"]
    zst = _extract(_real("table-multiframe.csv.zst"), "zstd", "t.csv.zst")["t.csv"]
    assert gz == zst == out["table.csv"] * 2


@pytest.mark.parametrize(
    ("name", "compression"),
    [
        ("real-gnu.tar", "tar"),
        ("real-pax.tar", "tar"),
        ("real.tar.gz", "tar.gz"),
        ("real.tar.zst", None),
        ("events.jsonl.gz", "gzip"),
        ("events.jsonl.zst", "zstd"),
        ("table-multiframe.csv.zst", "zstd"),
        ("table-multimember.csv.gz", "gzip"),
        ("real-infozip.zip", "zip"),
        ("real-descriptor.zip", "zip"),
    ],
)
def test_real_archives_cut_anywhere_never_commit_partial(
    name: str, compression: str | None
) -> None:
    """Every cut of a real archive either fails, or yields exactly the whole content.

    The only cuts that may succeed are those after every member is complete: a tar's
    zero padding after its end marker, or exactly between gzip members / zstd frames
    (a shorter valid stream, which the listing's size and sha256 catch).
    """
    data = _real(name)
    whole = _extract(data, compression, name)
    step = max(1, len(data) // 97)
    # Undeclared, a file shorter than any magic number is plain data (recognised as such).
    for cut in range(1 if compression else 8, len(data), step):
        try:
            got = _extract(data[:cut], compression, name)
        except (ArchiveRejected, IntegrityError):
            continue
        if name.endswith(".tar"):
            assert got == whole, cut
        else:
            # A prefix that decodes cleanly ends at a member/frame boundary.
            assert all(whole[k].startswith(v) for k, v in got.items()), cut
            assert name.startswith("table-multi"), (name, cut)


def test_zip_names_in_cp437_are_not_overlapping_entries() -> None:
    out = _extract(_real("real-cp437.zip"), "zip")
    assert out["café.csv"] == "id,name\n1,café\n".encode()


def test_zip_local_header_must_match_the_central_directory() -> None:
    data = bytearray(_zip([("a.jsonl", TEXT), ("b.jsonl", TEXT[:100])]))
    data[14] ^= 1  # the first local header's CRC-32 differs from the directory's
    assert _refusal(bytes(data), "zip") == ("ArchiveRejected", "corrupt_archive")


def test_zip_data_the_directory_does_not_list_is_refused() -> None:
    hidden = _zip([("hidden.jsonl", TEXT[:500])])
    listed = _zip([("a.jsonl", TEXT[:300])])
    cd = hidden.index(b"PK\x01\x02")
    # A local entry before the listed one that no directory entry names: the central
    # directory of `listed`, shifted by the hidden entry's length.
    entry = hidden[:cd]
    shifted = bytearray(listed)
    lcd = listed.index(b"PK\x01\x02")
    offset = int.from_bytes(shifted[lcd + 42 : lcd + 46], "little")
    shifted[lcd + 42 : lcd + 46] = (offset + len(entry)).to_bytes(4, "little")
    eocd = shifted.index(b"PK\x05\x06")
    start = int.from_bytes(shifted[eocd + 16 : eocd + 20], "little")
    shifted[eocd + 16 : eocd + 20] = (start + len(entry)).to_bytes(4, "little")
    data = entry + bytes(shifted)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["a.jsonl"]
    assert _refusal(data, "zip") == ("ArchiveRejected", "corrupt_archive")


def test_tar_member_names_that_are_not_utf8_are_refused() -> None:
    assert _refusal(_real("real-latin1-name.tar"), "tar") == ("ArchiveRejected", "bad_member_name")
    info = tarfile.TarInfo("caf\udce9.csv")  # how tarfile surfaces the byte 0xE9
    data = _tar([(info, b"a\n1\n")], "w")
    assert _refusal(data, "tar") == ("ArchiveRejected", "bad_member_name")


CPYTHON = Path(__file__).parent / "data" / "cpython"  # CPython's Lib/test/archivetestdata


@pytest.mark.parametrize(
    ("name", "compression", "expected"),
    [
        ("zip_cp437_header.zip", "zip", {"filename_with_æoå.txt", "filename_without.txt"}),
        ("zipdir.zip", "zip", {"a/b/c"}),
        ("zipdir_backslash.zip", "zip", "path_escape"),
        # A program before the zip (self-extracting): bytes the directory does not list.
        ("exe_with_zip", "zip", "corrupt_archive"),
        ("exe_with_z64", "zip", "corrupt_archive"),
        ("recursion.tar", "tar", "corrupt_archive"),
        # Every member type tarfile knows; its first link is refused by rule.
        ("testtar.tar.gz", "tar.gz", "hardlink"),
    ],
)
def test_cpython_test_archives(name: str, compression: str, expected: set[str] | str) -> None:
    data = (CPYTHON / name).read_bytes()
    if isinstance(expected, str):
        assert _refusal(data, compression, name)[1] == expected
    else:
        assert set(_extract(data, compression, name)) == expected


def test_cpython_testtar_cut_or_damaged_is_always_classified() -> None:
    """Cuts and bit flips of CPython's many-typed testtar never crash the extractor."""
    tar = gzip.decompress((CPYTHON / "testtar.tar.gz").read_bytes())
    rng = random.Random(15)
    for _ in range(150):
        blob = bytearray(tar[: rng.randrange(len(tar))])
        if blob and rng.random() < 0.5:
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        with contextlib.suppress(ArchiveRejected, IntegrityError):
            _extract(bytes(blob), "tar", "testtar.tar")


def test_tar_extended_headers_are_bounded() -> None:
    """tarfile reads a pax header whole into memory: its size is capped."""
    info = tarfile.TarInfo("a.jsonl")
    info.pax_headers = {"comment": "x" * 70_000}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info.size = 3
        archive.addfile(info, io.BytesIO(b"{}\n"))
    assert _refusal(buf.getvalue(), "tar") == ("ArchiveRejected", "corrupt_archive")
    info.pax_headers = {"comment": "x" * 1000}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info, io.BytesIO(b"{}\n"))
    assert _extract(buf.getvalue(), "tar") == {"a.jsonl": b"{}\n"}


def test_zstd_streams_of_near_empty_blocks_are_refused_quickly() -> None:
    # Frame header: no content size, no checksum; window descriptor 0x38 (128 KiB).
    header = b"\x28\xb5\x2f\xfd\x00\x38"
    raw_one_byte = (1 << 3).to_bytes(3, "little") + b"a"  # a raw block of one byte
    last_empty = (1).to_bytes(3, "little")
    data = header + raw_one_byte * 200_000 + last_empty
    assert _refusal(data, "zstd", "x.zst") == ("ArchiveRejected", "corrupt_compressed_data")
    # The same bytes in few blocks are a valid stream of the same content.
    few = header + ((100_000 << 3) | 1).to_bytes(3, "little") + b"a" * 100_000  # one block
    assert _extract(few, "zstd", "x.zst") == {"x": b"a" * 100_000}


def test_zstd_many_small_frames_are_accepted() -> None:
    """One frame per record, as some streaming loggers write: blocks of a few bytes."""
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    lines = [b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * (i % 7)) for i in range(60_000)]
    data = b"".join(cctx.compress(line) for line in lines)
    assert _extract(data, "zstd", "x.zst") == {"x": b"".join(lines)}


def test_zip_member_must_produce_its_declared_size() -> None:
    data = bytearray(_zip([("a.jsonl", b'{"a": 1}\n')]))
    cd = data.index(b"PK\x01\x02")
    # Both headers now declare 100 bytes; the deflate stream and CRC-32 hold 9.
    data[22:26] = (100).to_bytes(4, "little")
    data[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
    assert zipfile.ZipFile(io.BytesIO(bytes(data))).read("a.jsonl") == b'{"a": 1}\n'
    assert _refusal(bytes(data), "zip") == ("ArchiveRejected", "corrupt_archive")


class _FailingSource:
    """A download that breaks after ``after`` bytes with an error of its own."""

    def __init__(self, data: bytes, after: int) -> None:
        self._data = io.BytesIO(data)
        self._left = after

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            raise ConnectionResetError("peer reset")
        chunk = self._data.read(min(size if size > 0 else 1 << 20, self._left))
        self._left -= len(chunk)
        return chunk


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar", "tar.gz", "zip", "none"])
def test_a_failing_download_is_not_taken_for_a_bad_file(compression: str) -> None:
    """Only the file's bytes are classified; the source's own failure passes unchanged."""
    members = {"a.jsonl": TEXT}
    data = {
        "gzip": gzip.compress(TEXT),
        "zstd": zstandard.ZstdCompressor().compress(TEXT),
        "tar": _tar([(_file("a.jsonl"), TEXT)]),
        "tar.gz": _tar([(_file("a.jsonl"), TEXT)], "w:gz"),
        "zip": _zip(list(members.items())),
        "none": TEXT,
    }[compression]

    def read_all() -> None:
        for member in iter_members(
            _FailingSource(data, 600), compression=compression, file_name="f", limits=LIMITS
        ):
            while member.stream.read(65536):
                pass

    with pytest.raises(ConnectionResetError):
        read_all()


def test_a_declared_zstd_holding_a_tar_says_how_to_read_it() -> None:
    with pytest.raises(ArchiveRejected) as raised:
        _extract(_real("real.tar.zst"), "zstd", "real.tar.zst")
    assert raised.value.reason == "nested_archive"
    assert "leave compression unset" in raised.value.message
