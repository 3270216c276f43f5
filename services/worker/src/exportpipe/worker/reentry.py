"""Re-entry points of a compressed stream: where a decoder can start afresh (ADR 0020).

A zstd or gzip decoder cannot be saved mid-stream, but a zstd frame and a gzip member
each start afresh: a download that resumes at such a start can be decoded from there.
:class:`ReentryLog` is what the format-specific trackers
(:class:`~exportpipe.worker.zstdframes.FrameTracker`,
:class:`~exportpipe.worker.gzipmembers.GzipMembers`) fill as the compressed bytes pass:
for each start its source offset, its output offset and the running sha256 of the source
bytes before it (:mod:`exportpipe.worker.sha256state`), which a resumed attempt restores
so the file's digest still covers every byte.

Only one start per ``spacing`` output bytes is kept (the last one seen in each window):
a resume point wants the last start at or before a part boundary, which is either the
last start of the window before that boundary or one exactly on it, so keeping one per
part-sized window costs at most one frame/member of re-decoding and bounds memory by
the number of parts, however small the frames or members are (bgzip writes 64 KiB
members).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Any

from exportpipe.worker.sha256state import HashState, ResumableSha256

__all__ = ["HashTrail", "ReentryLog", "Start"]

Start = tuple[int, int, HashState]  # (source offset, output offset, sha256 state)


class ReentryLog:
    """The starts seen so far, and the source offset and hash of the bytes consumed.

    Attributes:
        offset: the source offset of the next byte to be consumed.
        starts: the starts kept, oldest first (only while :attr:`usable`).
        usable: False once the stream was found not to be re-enterable (a frame without
            a content size, data that does not parse, or the caller gave up on it).
    """

    def __init__(
        self,
        *,
        offset: int = 0,
        hasher: ResumableSha256 | None = None,
        spacing: int | None = None,
    ) -> None:
        self.offset = offset
        self._hash = hasher or ResumableSha256()
        self._spacing = spacing  # None: every start is kept
        self.starts: list[Start] = []
        self.usable = True

    def consume(self, data: bytes | memoryview) -> None:
        """The decoder took ``data``, the source bytes that follow :attr:`offset`."""
        if self.usable:
            self._hash.update(data)
        self.offset += len(data)

    def mark(self, output: int) -> None:
        """A frame/member starts at :attr:`offset`; its output starts at ``output``."""
        if not self.usable:
            return
        start = (self.offset, output, self._hash.state())
        every = self._spacing
        if every and self.starts and self.starts[-1][1] // every == output // every:
            self.starts[-1] = start
        else:
            self.starts.append(start)

    def give_up(self) -> None:
        """Stop recording: this stream will not be resumed at a start."""
        self.usable = False
        self.starts.clear()

    def _after(self, output: int) -> int:
        """Index of the first start past ``output`` (starts are in output order)."""
        return bisect_right(self.starts, output, key=lambda start: start[1])

    def at_or_before(self, output: int) -> Start | None:
        """The last start whose output offset is at or before ``output``."""
        i = self._after(output)
        return self.starts[i - 1] if i else None

    def drop_before(self, output: int) -> None:
        """Forget starts that a resume point at ``output`` will never use."""
        del self.starts[: max(self._after(output) - 1, 0)]


class HashTrail:
    """A pass-through reader that can give the source's sha256 state at recent offsets.

    A tar's entries are found by its reader, a little behind the bytes already read
    (it reads ahead by a record or so); :meth:`state_at` hashes the retained bytes up
    to the offset asked for. Bytes older than ``keep`` are hashed as they age, so the
    trail holds at most ``keep`` bytes; :meth:`stop` ends it (the file is no tar).
    """

    def __init__(
        self,
        inner: Any,
        *,
        offset: int = 0,
        hasher: ResumableSha256 | None = None,
        keep: int = 8 << 20,
    ) -> None:
        self._inner = inner
        self._hash = hasher or ResumableSha256()
        self._hashed = offset  # the hash covers the source up to here
        self.offset = offset  # the next byte read
        self._keep = keep
        # The bytes from _hashed to offset (views: trimming one copies nothing).
        self._chunks: deque[memoryview] = deque()
        self._held = 0
        self.active = True

    def read(self, size: int = -1, /) -> bytes:
        """Read from the inner stream, keeping what was read."""
        data: bytes = self._inner.read(size)
        self.offset += len(data)
        if data and self.active:
            self._chunks.append(memoryview(data))
            self._held += len(data)
            if self._held > self._keep:
                self._advance(self._held - self._keep)
        return data

    def _advance(self, count: int) -> None:
        """Hash the next ``count`` retained bytes."""
        while count:
            chunk = self._chunks[0]
            take = min(count, len(chunk))
            self._hash.update(chunk[:take])
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
            self._held -= take
            self._hashed += take
            count -= take

    def state_at(self, offset: int) -> HashState | None:
        """The sha256 state of the source's bytes before ``offset`` (``None``: too old)."""
        if not self.active or not self._hashed <= offset <= self.offset:
            return None
        self._advance(offset - self._hashed)
        return self._hash.state()

    def stop(self) -> None:
        """Keep nothing more: no state will be asked for."""
        self.active = False
        self._chunks.clear()
        self._held = 0
