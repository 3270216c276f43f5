"""The frame layout of a zstd stream (RFC 8878), walked as its bytes stream past.

:class:`FrameWalker` reads frame, block and skippable-frame headers (never the block
contents) and tells its subclass what it finds. Extraction's strict reader proves with
it that a stream ends on a frame boundary; :class:`FrameTracker` records where frames
start (ADR 0020): a download that resumes at a frame's first byte can be decoded from
there. For each frame start it records the source offset, the output offset (the sum of
the earlier frames' ``Frame_Content_Size``) and the running sha256 of the source bytes
before it. A frame without ``Frame_Content_Size`` (streamed compression), or anything
that does not parse, makes the tracker stop recording (:attr:`FrameTracker.usable` is
False): the job then falls back to re-reading with part reuse, and the decoder, not
this parser, judges the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exportpipe.worker.reentry import ReentryLog, Start

__all__ = ["FrameTracker", "FrameWalker"]

_MAGIC = 0xFD2FB528
_SKIPPABLE = 0x184D2A50  # ...5F: the low 4 bits are free


class FrameWalker:
    """Walks the frame layout of the bytes given to :meth:`_walk`; subclasses react.

    Attributes:
        walked: bytes walked so far.
    """

    def __init__(self) -> None:
        self.walked = 0
        self._frames = 0  # frames (skippable ones included) whose last block header was read
        self._skip = 0  # bytes of block content (or a skippable frame) still to pass
        self._need = 4  # header bytes to collect before the next step
        self._buf = b""
        self._step: Callable[[bytes], None] = self._frame_magic
        self._content = 0  # the current frame's content size (0 when it has none)
        self._fcs = (0, 0)  # where its Frame_Content_Size field starts, and its length
        self._checksum = False

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes walked end exactly between two frames."""
        return self._step == self._frame_magic and not self._buf and not self._skip

    def _walk(self, view: memoryview) -> int:
        """Walk ``view`` while :meth:`_walking`; return how many of its bytes were walked."""
        pos, n = 0, len(view)
        while pos < n and self._walking():
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
            else:
                take = min(self._need - len(self._buf), n - pos)
                self._buf += bytes(view[pos : pos + take])
            self._passed(view[pos : pos + take])
            pos += take
            self.walked += take
            if len(self._buf) == self._need:
                buf, self._buf = self._buf, b""
                self._step(buf)
            elif self._skip or self._buf:
                continue
            if self.at_boundary:
                self._frame_start()
        return pos

    # -- what subclasses react to ---------------------------------------------------------

    def _walking(self) -> bool:
        return True

    def _passed(self, data: memoryview) -> None:
        """``data`` was walked (the bytes up to where the next step happens)."""

    def _frame_start(self) -> None:
        """A frame starts at the next byte."""

    def _not_a_frame(self) -> None:
        """The 4 bytes just walked are neither a zstd nor a skippable frame's magic."""

    def _no_content_size(self) -> None:
        """The frame just started does not declare its content size."""

    def _block(self, kind: int) -> None:
        """A block header of type ``kind`` was read (``3``: reserved, corrupt)."""

    # -- the layout ------------------------------------------------------------------------

    def _expect(self, need: int, step: Callable[[bytes], None]) -> None:
        self._need, self._step = need, step

    def _frame_magic(self, buf: bytes) -> None:
        magic = int.from_bytes(buf, "little")
        if magic == _MAGIC:
            self._expect(1, self._frame_header)
        elif magic & 0xFFFFFFF0 == _SKIPPABLE:
            self._expect(4, self._skippable_size)
        else:
            self._not_a_frame()

    def _skippable_size(self, buf: bytes) -> None:
        self._skip = int.from_bytes(buf, "little")
        self._frames += 1
        self._expect(4, self._frame_magic)

    def _frame_header(self, buf: bytes) -> None:
        fhd = buf[0]
        fcs_flag, single, did_flag = fhd >> 6, fhd >> 5 & 1, fhd & 3
        self._checksum = bool(fhd & 4)
        self._fcs = ((0 if single else 1) + (0, 1, 2, 4)[did_flag], (single, 2, 4, 8)[fcs_flag])
        if self._fcs[1] == 0 or fhd & 8:  # no content size, or the reserved bit set
            self._no_content_size()
        self._expect(sum(self._fcs), self._frame_rest)

    def _frame_rest(self, buf: bytes) -> None:
        fcs = int.from_bytes(buf[self._fcs[0] :], "little")
        self._content = fcs + 256 if self._fcs[1] == 2 else fcs
        self._expect(3, self._block_header)

    def _block_header(self, buf: bytes) -> None:
        value = int.from_bytes(buf, "little")
        last, kind, size = value & 1, value >> 1 & 3, value >> 3
        self._block(kind)
        self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
        if last:
            self._frame_done()
            self._expect(4, self._checksum_done if self._checksum else self._frame_magic)

    def _checksum_done(self, _buf: bytes) -> None:
        self._expect(4, self._frame_magic)

    def _frame_done(self) -> None:
        self._frames += 1


class FrameTracker(FrameWalker):
    """A pass-through reader that records zstd frame starts.

    Attributes:
        frames: the frame starts seen, oldest first (only while :attr:`usable`).
        usable: False once a frame without a content size, or unparsable data, was seen.
    """

    def __init__(self, inner: Any, *, output: int = 0, log: ReentryLog | None = None) -> None:
        super().__init__()
        self._inner = inner
        self.log = log or ReentryLog()
        self._output = output  # output offset at the start of the current frame
        self._frame_start()

    @property
    def frames(self) -> list[Start]:
        """The frame starts kept, oldest first (only while :attr:`usable`)."""
        return self.log.starts

    @property
    def usable(self) -> bool:
        """False once a frame without a content size, or unparsable data, was seen."""
        return self.log.usable

    def read(self, size: int = -1, /) -> bytes:
        """Read from the inner stream, tracking frames."""
        data = self._inner.read(size)
        if data:
            view = memoryview(data)
            self.log.consume(view[self._walk(view) :])
        return bytes(data) if not isinstance(data, bytes) else data

    def _walking(self) -> bool:
        return self.usable

    def _passed(self, data: memoryview) -> None:
        self.log.consume(data)

    def _frame_start(self) -> None:
        self.log.mark(self._output)

    def _not_a_frame(self) -> None:
        self.log.give_up()

    def _no_content_size(self) -> None:
        self.log.give_up()

    def _block(self, kind: int) -> None:
        if kind == 3:  # reserved: corrupt
            self.log.give_up()

    def _frame_done(self) -> None:
        super()._frame_done()
        self._output += self._content
