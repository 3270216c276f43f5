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

from exportpipe.worker.sha256state import HashState, ResumableSha256

__all__ = ["ReentryLog", "Start"]

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

    def at_or_before(self, output: int) -> Start | None:
        """The last start whose output offset is at or before ``output``."""
        found = None
        for start in self.starts:
            if start[1] > output:
                break
            found = start
        return found

    def drop_before(self, output: int) -> None:
        """Forget starts that a resume point at ``output`` will never use."""
        keep = 0
        for i, start in enumerate(self.starts):
            if start[1] <= output:
                keep = i
        del self.starts[:keep]
