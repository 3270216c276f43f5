"""The resumable sha256 agrees with hashlib across saved and restored states."""

from __future__ import annotations

import hashlib
import os

import orjson
import pytest

from exportpipe.worker.sha256state import ResumableSha256, available


def test_libcrypto_is_available_here() -> None:
    assert available()


@pytest.mark.parametrize("cut", [0, 1, 55, 63, 64, 65, 4096, 100_001, 300_000])
def test_state_saved_as_json_resumes_to_the_same_digest(cut: int) -> None:
    data = os.urandom(300_000)
    first = ResumableSha256()
    first.update(data[:cut])
    assert first.hexdigest() == hashlib.sha256(data[:cut]).hexdigest()
    assert first.length == cut
    saved = orjson.loads(orjson.dumps(first.state()))
    second = ResumableSha256(saved)
    second.update(bytearray(data[cut:]))
    assert second.hexdigest() == hashlib.sha256(data).hexdigest()


def test_inconsistent_state_is_refused() -> None:
    state = ResumableSha256().state()
    state["tail"] = "00"  # one pending byte, but a length of 0
    with pytest.raises(ValueError, match="consistent"):
        ResumableSha256(state)
