"""Re-entry bookkeeping: the sha256 state at recent offsets of a passing stream."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from exportpipe.worker.reentry import HashTrail
from exportpipe.worker.sha256state import ResumableSha256

DATA = os.urandom(300_000)


def _digest(state: Any) -> str:
    return ResumableSha256(state).hexdigest()


def test_the_state_at_any_retained_offset_is_the_prefix_digest(chunked: Any) -> None:
    trail = HashTrail(chunked(DATA, 3), keep=50_000)
    read = b""
    asked = 0
    while chunk := trail.read(1 << 16):
        read += chunk
        # Ask for offsets a little behind the reader, as a tar reader finds its entries.
        offset = max(asked, len(read) - 20_000)
        state = trail.state_at(offset)
        assert state is not None
        assert _digest(state) == hashlib.sha256(DATA[:offset]).hexdigest()
        asked = offset
    assert read == DATA


def test_offsets_older_than_kept_or_ahead_of_the_reader_have_no_state() -> None:
    import io

    trail = HashTrail(io.BytesIO(DATA), keep=10_000)
    trail.read(100_000)
    assert trail.state_at(50_000) is None  # hashed past it to keep 10 kB only
    assert trail.state_at(100_001) is None  # not read yet
    assert trail.state_at(95_000) is not None
    trail.stop()
    assert trail.state_at(99_000) is None


def test_a_trail_resumed_mid_stream_continues_its_saved_hash() -> None:
    import io

    first = ResumableSha256()
    first.update(DATA[:1000])
    trail = HashTrail(io.BytesIO(DATA[1000:]), offset=1000, hasher=first)
    trail.read(5000)
    state = trail.state_at(4000)
    assert state is not None
    assert _digest(state) == hashlib.sha256(DATA[:4000]).hexdigest()
