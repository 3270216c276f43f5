"""The member-aware gzip reader: every member start found, failures named as gzip's are."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
from typing import Any

import pytest

from exportpipe.common.errors import ArchiveRejected, IntegrityError
from exportpipe.worker.extract import ExtractLimits, iter_members
from exportpipe.worker.gzipmembers import GzipMembers
from exportpipe.worker.reentry import ReentryLog
from exportpipe.worker.sha256state import ResumableSha256

RAW = b"".join(b'{"id": %d}\n' % i for i in range(200_000))
STEP = 150_000


def _members() -> tuple[bytes, list[tuple[int, int]]]:
    """RAW as gzip members written by the gzip binary (one with its name: FNAME set)."""
    blob, starts = b"", []
    for i in range(0, len(RAW), STEP):
        starts.append((len(blob), i))
        args = ["gzip", "-c", "-N"] if i == 0 else ["gzip", "-1", "-c", "-n"]
        blob += subprocess.run(
            args, input=RAW[i : i + STEP], capture_output=True, check=True
        ).stdout
    return blob, starts


def _read(reader: GzipMembers, size: int = 65_536) -> bytes:
    out = bytearray()
    while chunk := reader.read(size):
        assert len(chunk) <= size
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_member_start_is_found_with_its_source_digest(seed: int, chunked: Any) -> None:
    blob, expected = _members()
    log = ReentryLog()
    assert _read(GzipMembers(chunked(blob, seed), log=log)) == RAW
    assert [(s, o) for s, o, _ in log.starts] == expected
    for start, output, state in log.starts:
        assert ResumableSha256(state).hexdigest() == hashlib.sha256(blob[:start]).hexdigest()
        # A read started there decodes exactly the rest of the output.
        assert _read(GzipMembers(io.BytesIO(blob[start:]), output=output)) == RAW[output:]


def test_one_start_per_window_is_kept() -> None:
    blob, expected = _members()
    log = ReentryLog(spacing=400_000)
    _read(GzipMembers(io.BytesIO(blob), log=log))
    # The last start of each 400 kB output window, nothing else.
    last: dict[int, int] = {}
    for _, output in expected:
        last[output // 400_000] = output
    assert [o for _, o, _ in log.starts] == sorted(last.values())


def test_zero_padding_after_a_member_is_skipped_like_gzip() -> None:
    blob, _ = _members()
    padded = blob + bytes(1000)
    assert gzip.decompress(padded) == RAW
    assert _read(GzipMembers(io.BytesIO(padded), log=ReentryLog())) == RAW


def _through_extract(data: bytes) -> bytes:
    log = ReentryLog()
    (member,) = iter_members(
        io.BytesIO(data),
        compression="gzip",
        file_name="x.jsonl.gz",
        limits=ExtractLimits(),
        starts=log,
    )
    out = bytearray()
    while chunk := member.stream.read(1 << 16):
        out += chunk
    assert member.whole
    return bytes(out)


def test_failures_are_named_as_for_the_standard_reader() -> None:
    blob, _ = _members()
    assert _through_extract(blob) == RAW
    with pytest.raises(IntegrityError) as cut:
        _through_extract(blob[:-5])
    assert cut.value.reason == "truncated"
    with pytest.raises(ArchiveRejected) as garbage:
        _through_extract(blob + b"PK\x03\x04 not gzip")
    assert garbage.value.reason == "trailing_garbage"
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF
    with pytest.raises(ArchiveRejected) as corrupt:
        _through_extract(bytes(damaged))
    assert corrupt.value.reason == "corrupt_compressed_data"
