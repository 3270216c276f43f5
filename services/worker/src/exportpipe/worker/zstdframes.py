"""Where the frames of a zstd stream start, found as its bytes stream past (ADR 0020).

A zstd decoder cannot be saved mid-frame, but every frame starts afresh: a download
that resumes at a frame's first byte can be decoded from there. :class:`FrameTracker`
passes reads through unchanged while parsing the frame layout (RFC 8878: frame header,
block headers, optional checksum; skippable frames), and records for each frame start
its source offset, the output offset (the sum of the earlier frames'
``Frame_Content_Size``) and the running sha256 of the source bytes before it.

A frame without ``Frame_Content_Size`` (streamed compression) leaves the output offset
unknown: the tracker then stops recording (:attr:`FrameTracker.usable` is False) and
the job falls back to re-reading with part reuse. Anything that does not parse is
treated the same way; the decoder, not this parser, judges the data.
"""

from __future__ import annotations

from typing import Any

from exportpipe.worker.reentry import ReentryLog, Start
from exportpipe.worker.sha256state import ResumableSha256

__all__ = ["FrameStart", "FrameTracker"]

_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # ...5F: the low 4 bits are free

FrameStart = Start  # (source offset, output offset, sha256 state)


class FrameTracker:
    """A pass-through reader that records zstd frame starts.

    Attributes:
        frames: the frame starts seen, oldest first (only while :attr:`usable`).
        usable: False once a frame without a content size, or unparsable data, was seen.
    """

    def __init__(
        self,
        inner: Any,
        *,
        offset: int = 0,
        output: int = 0,
        hasher: ResumableSha256 | None = None,
        log: ReentryLog | None = None,
    ) -> None:
        self._inner = inner
        self.log = log or ReentryLog(offset=offset, hasher=hasher)
        self._output = output  # output offset at the start of the current frame
        self._skip = 0  # bytes of block content (or a skippable frame) still to pass
        self._need = 4  # header bytes to collect before the next step
        self._buf = b""
        self._step = self._frame_magic
        self._content = 0  # this frame's content size
        self._checksum = False
        self._at_frame_start()

    @property
    def frames(self) -> list[Start]:
        """The frame starts kept, oldest first (only while :attr:`usable`)."""
        return self.log.starts

    @property
    def usable(self) -> bool:
        """False once a frame without a content size, or unparsable data, was seen."""
        return self.log.usable

    @property
    def offset(self) -> int:
        """The source offset of the next byte read."""
        return self.log.offset

    def read(self, size: int = -1, /) -> bytes:
        """Read from the inner stream, tracking frames."""
        data = self._inner.read(size)
        if data and self.usable:
            self._scan(memoryview(data))
        elif data:
            self.log.consume(data)
        return bytes(data) if not isinstance(data, bytes) else data

    def drop_before(self, output: int) -> None:
        """Forget frame starts that a resume point at ``output`` will never use."""
        self.log.drop_before(output)

    # -- parsing ------------------------------------------------------------------------

    def _scan(self, view: memoryview) -> None:
        pos = 0
        n = len(view)
        while pos < n and self.usable:
            if self._skip:
                step = min(self._skip, n - pos)
                self.log.consume(view[pos : pos + step])
                self._skip -= step
                pos += step
                if not self._skip and self._step == self._frame_magic:
                    self._at_frame_start()
                continue
            take = min(self._need - len(self._buf), n - pos)
            self._buf += bytes(view[pos : pos + take])
            self.log.consume(view[pos : pos + take])
            pos += take
            if len(self._buf) == self._need:
                buf, self._buf = self._buf, b""
                self._step(buf)
        if not self.usable:
            self.log.consume(view[pos:])

    def _at_frame_start(self) -> None:
        self.log.mark(self._output)

    def _expect(self, need: int, step: Any) -> None:
        self._need, self._step = need, step

    def _frame_magic(self, buf: bytes) -> None:
        magic = int.from_bytes(buf, "little")
        if magic == _MAGIC:
            self._expect(1, self._frame_header)
        elif magic & 0xFFFFFFF0 == _SKIPPABLE:
            self._expect(4, self._skippable_size)
        else:
            self.log.give_up()

    def _skippable_size(self, buf: bytes) -> None:
        self._expect(4, self._frame_magic)
        self._skip = int.from_bytes(buf, "little")
        if not self._skip:
            self._at_frame_start()

    def _frame_header(self, buf: bytes) -> None:
        fhd = buf[0]
        fcs_flag, single, self._checksum, did_flag = fhd >> 6, fhd >> 5 & 1, bool(fhd & 4), fhd & 3
        fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        self._fcs_at = (0 if single else 1) + (0, 1, 2, 4)[did_flag]
        self._fcs_size = fcs_size
        if fcs_size == 0 or fhd & 8:  # no content size, or the reserved bit set
            self.log.give_up()
            return
        self._expect(self._fcs_at + fcs_size, self._frame_rest)

    def _frame_rest(self, buf: bytes) -> None:
        fcs = int.from_bytes(buf[self._fcs_at :], "little")
        self._content = fcs + 256 if self._fcs_size == 2 else fcs
        self._expect(3, self._block_header)

    def _block_header(self, buf: bytes) -> None:
        value = int.from_bytes(buf, "little")
        last, kind, size = value & 1, value >> 1 & 3, value >> 3
        if kind == 3:
            self.log.give_up()
            return
        if last:
            self._expect(4, self._checksum_done) if self._checksum else self._frame_done()
        self._skip = 1 if kind == 1 else size
        if self._skip == 0 and last and not self._checksum:
            self._at_frame_start()

    def _checksum_done(self, _buf: bytes) -> None:
        self._frame_done()
        self._at_frame_start()

    def _frame_done(self) -> None:
        self._output += self._content
        self._expect(4, self._frame_magic)
