"""Deterministic content and export specs of the Export API simulator."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import tarfile
import zipfile

import pytest
import zstandard
from pydantic import ValidationError

from exportpipe.tools.simulator import (
    ALL_KINDS,
    KIND_INFO,
    ContentCache,
    ExportSpec,
    FileSpec,
    build,
    expected_files,
)


def _unpack(kind: str, raw: bytes) -> list[tuple[str, bytes]]:
    """Decode ``raw`` independently of the simulator's own code."""
    compression = KIND_INFO[kind].compression
    if compression == "gzip":
        return [("", gzip.decompress(raw))]
    if compression == "zstd":
        return [("", zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read())]
    if compression == "zip":
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            return [(n, zf.read(n)) for n in zf.namelist()]
    if compression in ("tar", "tar.gz"):
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tf:
            out = []
            for m in tf.getmembers():
                fh = tf.extractfile(m)
                assert fh is not None
                out.append((m.name, fh.read()))
            return out
    return [("", raw)]


@pytest.mark.parametrize("kind", sorted(KIND_INFO))
def test_every_kind_decodes_to_its_members(kind: str) -> None:
    spec = FileSpec(file_id="a1", name=f"x{KIND_INFO[kind].suffix}", kind=kind, size_bytes=5000)
    content = build(spec, export_id="exp")

    assert content.sha256 == content.listed_sha256
    assert content.listed_size == len(content.raw)
    assert content.members is not None
    unpacked = _unpack(kind, content.raw)
    assert [data for _, data in unpacked] == [data for _, data in content.members]
    if KIND_INFO[kind].archive:
        assert [name for name, _ in unpacked] == [name for name, _ in content.members]
    total = sum(len(data) for _, data in content.members)
    assert 5000 <= total < 5000 + 400 * spec.members


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "jsonl.tar.gz"])
def test_jsonl_content_is_valid_utf8_json_per_line(kind: str) -> None:
    content = build(FileSpec(file_id="a", name="a", kind=kind, size_bytes=3000), export_id="e")
    assert content.members is not None
    for _, data in content.members:
        lines = data.decode("utf-8").splitlines()
        assert lines
        for line in lines:
            assert isinstance(json.loads(line), dict)
    assert any(byte >= 0x80 for _, d in content.members for byte in d)  # real UTF-8


def test_csv_content_has_consistent_columns() -> None:
    content = build(FileSpec(file_id="a", name="a.csv", kind="csv", size_bytes=3000))
    assert content.members is not None
    rows = list(csv.reader(io.StringIO(content.members[0][1].decode())))
    assert rows[0] == ["id", "src", "amount", "word", "note"]
    assert {len(r) for r in rows} == {5}


def test_same_spec_same_bytes_different_seed_or_export_different_bytes() -> None:
    spec = FileSpec(file_id="a", name="a.jsonl.zst", kind="jsonl.zst", seed=7, size_bytes=2000)
    assert build(spec, export_id="e").raw == build(spec, export_id="e").raw
    assert build(spec, export_id="e").raw != build(spec, export_id="other").raw
    reseeded = spec.model_copy(update={"seed": 8})
    assert build(spec, export_id="e").raw != build(reseeded, export_id="e").raw


def test_known_digest_is_stable_across_runs() -> None:
    # Pins the generator: tests in other processes rely on identical bytes everywhere.
    spec = FileSpec(file_id="pin", name="pin.jsonl.gz", kind="jsonl.gz", seed=42, size_bytes=1000)
    first = build(spec, export_id="exp-pin")
    assert first.sha256 == hashlib.sha256(first.raw).hexdigest()
    assert build(spec, export_id="exp-pin").sha256 == first.sha256
    assert gzip.decompress(first.raw).startswith(b'{"id":0,"src":"exp-pin/pin"')


def test_flip_byte_serves_bytes_that_do_not_match_the_listing() -> None:
    spec = FileSpec(file_id="a", name="a.jsonl.gz", kind="jsonl.gz", corrupt="flip_byte")
    content = build(spec)
    good = build(spec.model_copy(update={"corrupt": None}))
    assert content.listed_sha256 == good.sha256
    assert content.sha256 != content.listed_sha256
    assert len(content.raw) == content.listed_size
    with pytest.raises((OSError, EOFError, gzip.BadGzipFile)):
        gzip.decompress(content.raw)


def test_bad_record_is_listed_honestly_but_invalid() -> None:
    spec = FileSpec(
        file_id="a", name="a.jsonl", kind="jsonl", size_bytes=2000, corrupt="bad_record"
    )
    content = build(spec)
    assert content.sha256 == content.listed_sha256
    bad = []
    for line in content.raw.decode().splitlines():
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad.append(line)
    assert len(bad) == 1

    csv_spec = FileSpec(file_id="c", name="c.zip", kind="csv.zip", members=3, corrupt="bad_record")
    members = build(csv_spec).members
    assert members is not None
    widths = [{len(r) for r in csv.reader(io.StringIO(d.decode()))} for _, d in members]
    assert widths.count({5}) == 2


def test_path_escape_names_a_member_outside_the_archive() -> None:
    spec = FileSpec(file_id="z", name="z.zip", kind="csv.zip", corrupt="path_escape")
    with zipfile.ZipFile(io.BytesIO(build(spec).raw)) as zf:
        assert any(n.startswith("../") for n in zf.namelist())


@pytest.mark.parametrize("kind", ["jsonl.gz", "jsonl.zst", "csv.zip", "jsonl.tar.gz"])
def test_bomb_is_small_but_expands_hugely(kind: str) -> None:
    spec = FileSpec(
        file_id="b",
        name=f"b{KIND_INFO[kind].suffix}",
        kind=kind,
        corrupt="bomb",
        bomb_bytes=8 << 20,
    )
    content = build(spec)
    assert content.members is None
    assert len(content.raw) < (8 << 20) // 100
    expanded = sum(len(d) for _, d in _unpack(kind, content.raw))
    assert expanded >= 8 << 20


def test_corruptions_must_fit_the_kind() -> None:
    with pytest.raises(ValidationError, match="bad_record"):
        FileSpec(file_id="a", name="a.bin", kind="bin", corrupt="bad_record")
    with pytest.raises(ValidationError, match="path_escape"):
        FileSpec(file_id="a", name="a.gz", kind="jsonl.gz", corrupt="path_escape")
    with pytest.raises(ValidationError, match="bomb"):
        FileSpec(file_id="a", name="a.csv", kind="csv", corrupt="bomb")


def test_generated_export_is_lazy_and_addressable() -> None:
    spec = ExportSpec.mixed("big", 1_000_000, seed=3)
    assert spec.count == 1_000_000
    last = spec.file(999_999)
    assert last.file_id == "f999999"
    assert spec.find("f999999") == last
    assert spec.find("f1000000") is None
    assert spec.find("nope") is None
    kinds = {spec.file(i).kind for i in range(len(ALL_KINDS))}
    assert kinds == set(ALL_KINDS)
    with pytest.raises(IndexError):
        spec.file(1_000_000)


def test_explicit_files_come_first_and_must_not_clash() -> None:
    extra = FileSpec(file_id="big-one", name="big.jsonl.gz", size_bytes=10)
    spec = ExportSpec(export_id="e", files=(extra,), generated=2)
    assert [spec.file(i).file_id for i in range(3)] == ["big-one", "f000000", "f000001"]
    assert spec.find("big-one") == extra
    with pytest.raises(ValidationError, match="clashes"):
        ExportSpec(
            export_id="e", files=(extra.model_copy(update={"file_id": "f000001"}),), generated=3
        )
    with pytest.raises(ValidationError, match="unique"):
        ExportSpec(export_id="e", files=(extra, extra))


def test_spec_round_trips_through_json() -> None:
    spec = ExportSpec.mixed("e", 5, empty_pages={1, 3}, pending_polls=2, seed=9)
    again = ExportSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [f.content.raw for f in expected_files(again)] == [
        f.content.raw for f in expected_files(spec)
    ]


def test_cache_respects_its_budget_and_rebuilds_identically() -> None:
    cache = ContentCache(budget_bytes=30_000)
    spec = ExportSpec.mixed("e", 20, file_size=4000)
    first = [cache.get("e", spec.file(i)).raw for i in range(20)]
    assert cache._used <= 30_000
    assert [cache.get("e", spec.file(i)).raw for i in range(20)] == first
    assert cache.meta("e", spec.file(0)) == (len(first[0]), hashlib.sha256(first[0]).hexdigest())
