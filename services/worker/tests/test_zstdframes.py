"""The zstd frame tracker finds every frame start, its output offset and source digest."""

from __future__ import annotations

import hashlib
import io
import os
import random
from typing import Any

import pytest
import zstandard

from exportpipe.worker.sha256state import ResumableSha256
from exportpipe.worker.zstdframes import FrameTracker


def _frames(pieces: list[bytes], **kw: object) -> list[bytes]:
    return [zstandard.ZstdCompressor(level=1, **kw).compress(p) for p in pieces]  # type: ignore[arg-type]


@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_frame_start_is_found(checksum: bool, seed: int, chunked: Any) -> None:
    rng = random.Random(seed)
    pieces = [
        os.urandom(rng.randint(0, 300_000)) + b"a" * rng.randint(0, 200_000) for _ in range(7)
    ]
    frames = _frames(pieces, write_checksum=checksum)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    frames.insert(3, skippable)
    pieces.insert(3, b"")
    data = b"".join(frames)
    tracker = FrameTracker(chunked(data, seed))
    out = b""
    while chunk := tracker.read(1 << 16):
        out += chunk
    assert out == data
    assert tracker.usable
    starts = [0]
    outputs = [0]
    for frame, piece in zip(frames, pieces, strict=True):
        starts.append(starts[-1] + len(frame))
        outputs.append(outputs[-1] + len(piece))
    seen = [(s, o) for s, o, _ in tracker.frames]
    assert seen == list(zip(starts, outputs, strict=True))
    for s, _o, state in tracker.frames:
        assert ResumableSha256(state).hexdigest() == hashlib.sha256(data[:s]).hexdigest()


def test_a_streamed_frame_without_content_size_makes_it_unusable() -> None:
    buf = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(buf, closefd=False) as writer:
        writer.write(b"x" * 100_000)
    tracker = FrameTracker(io.BytesIO(_frames([b"first"])[0] + buf.getvalue()))
    while tracker.read(4096):
        pass
    assert not tracker.usable
    assert tracker.frames == []


def test_not_zstd_is_unusable() -> None:
    tracker = FrameTracker(io.BytesIO(b"plain text, not a frame"))
    assert tracker.read(100) == b"plain text, not a frame"
    assert not tracker.usable
