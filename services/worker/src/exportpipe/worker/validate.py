"""Content validation by declared format, fed chunk by chunk as bytes stream past.

* ``jsonl`` — every line that is not blank (JSON whitespace only) is one JSON object in
  UTF-8 (checked with msgspec, see :class:`JsonlValidator`); no line longer than
  ``max_line_bytes``. Records: non-blank lines.
* ``csv`` — UTF-8, a non-empty header row, and every row with the header's field count,
  exactly as Python's ``csv`` module reads it in strict mode (RFC 4180 quoting; quoted
  fields may span lines; a quote inside an unquoted field is a literal character).
  Records: non-empty rows after the header.
* ``binary`` — integrity only; no record count.

One BOM rule for both text formats (ADR 0013): a UTF-8 byte order mark as the first
three bytes of a member is accepted and ignored (the bytes are committed unchanged);
anywhere else it is content (not JSON whitespace, a character of a CSV field).

Acceptance never depends on where chunks start and end. A validator never holds more
than one chunk plus one incomplete line/record.
"""

from __future__ import annotations

import base64
import csv
import io
from collections import deque
from typing import Any, Protocol

import msgspec

from exportpipe.common.errors import ValidationFailed
from exportpipe.common.schemas import ContentFormat

__all__ = ["BinaryValidator", "CsvValidator", "JsonlValidator", "Validator", "validator_for"]

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"
_CSV_INCOMPLETE = "unexpected end of data"  # _csv's strict-mode error at a cut record


class Validator(Protocol):
    """Checks one member's content as it streams past."""

    def feed(self, data: bytes) -> None:
        """Check the next chunk.

        Raises:
            ValidationFailed: the content so far breaks the format.
        """

    def finish(self) -> int | None:
        """Check the end of the content; return the record count (``None`` for binary)."""

    def save_state(self) -> dict[str, Any]:
        """What carries across a chunk boundary, JSON-ready (a resume point, ADR 0020)."""

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`save_state`'s ``state`` (on a fresh validator).

        Raises:
            ValueError: the state was saved by another kind of validator, or before the
                stream's first bytes were settled.
        """


class _TextValidator:
    """Base of the line validators: a UTF-8 BOM at the very start of the stream is
    dropped, however the stream is chunked; their ``_parse_feed`` sees the rest."""

    def __init__(self, *, what: str, max_line_bytes: int) -> None:
        self._what = what
        self._max = max_line_bytes
        self._carry = b""
        self._bom_head: bytes | None = b""  # None once the first three bytes are known
        self.records = 0

    def feed(self, data: bytes) -> None:
        """Check every line or record completed by ``data``; keep the unfinished last."""
        if self._bom_head is not None:
            head = self._bom_head + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._bom_head = head  # maybe a BOM: wait for more
                return
            self._bom_head = None
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if data:
            self._parse_feed(data)

    def _parse_feed(self, data: bytes) -> None:
        raise NotImplementedError

    _COUNTERS: tuple[str, ...] = ()  # subclasses' fields that carry across chunks

    def save_state(self) -> dict[str, Any]:
        """The unfinished line or record (base64), the counters, the kind."""
        state: dict[str, Any] = {"kind": type(self).__name__, "records": self.records}
        state |= {name.lstrip("_"): getattr(self, name) for name in self._COUNTERS}
        state["carry"] = base64.b64encode(self._carry).decode("ascii")
        state["bom_pending"] = self._bom_head is not None
        return state

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (see :meth:`Validator.restore_state`)."""
        _check_kind(self, state)
        # Only the stream's first bytes can hold the byte-order mark, long before any
        # part boundary; a resumed validator never looks for it again.
        if state.get("bom_pending"):
            raise ValueError("validator state saved before the byte-order mark was settled")
        self._bom_head = None
        self.records = state.get("records", 0)
        for name in self._COUNTERS:
            setattr(self, name, state.get(name.lstrip("_")))
        self._carry = base64.b64decode(state.get("carry", ""))

    def _release_held_back(self) -> None:
        """At the end: feed the bytes held back that turned out not to be a BOM."""
        head, self._bom_head = self._bom_head, None
        if head:
            self._parse_feed(head)


class BinaryValidator:
    """Accepts any bytes; integrity is checked by the download."""

    def feed(self, data: bytes) -> None:
        """Nothing to check."""

    def finish(self) -> None:
        """No record count for binary content."""
        return None

    def save_state(self) -> dict[str, Any]:
        """Nothing carries: the state is only the kind."""
        return {"kind": type(self).__name__}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Check that ``state`` is a binary validator's."""
        _check_kind(self, state)


def _check_kind(validator: object, state: dict[str, Any]) -> None:
    if state.get("kind") != type(validator).__name__:
        raise ValueError(f"validator state of {state.get('kind')!r}, not {type(validator)}")


class _AnyObject(msgspec.Struct):
    """Any JSON object. Decoding checks the syntax of every member and keeps none."""


_decode_object = msgspec.json.Decoder(_AnyObject).decode
_JSON_ERRORS = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError


class JsonlValidator(_TextValidator):
    """Every non-empty line must be a JSON object.

    Lines are decoded with msgspec into a field-less struct: the decoder checks the
    whole line's JSON syntax (trailing characters included) and that it is an object,
    but builds no Python object for its members, which makes it about twice as fast as
    parsing every line into a dict (ADR 0012). msgspec does not check the UTF-8 of
    strings it skips, so each block of lines is checked for UTF-8 first (free when it
    is ASCII).
    """

    def __init__(self, *, what: str, max_line_bytes: int) -> None:
        super().__init__(what=what, max_line_bytes=max_line_bytes)
        self._lines = 0  # lines completed so far (for error positions)

    _COUNTERS = ("_lines",)

    def _fail(self, line_no: int, why: str) -> ValidationFailed:
        return ValidationFailed(f"{self._what}: line {line_no}: {why}", reason="invalid_jsonl")

    def _check_line(self, line: bytes, line_no: int) -> None:
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._fail(line_no, f"not UTF-8 at byte {exc.start + 1}") from None
        try:
            _decode_object(line)
        except msgspec.ValidationError:  # valid JSON, but not an object
            raise self._fail(line_no, "not a JSON object") from None
        except msgspec.DecodeError as exc:
            if not line.strip(_JSON_WHITESPACE):
                return
            raise self._fail(line_no, f"not JSON ({exc})") from None
        except RecursionError:
            raise self._fail(line_no, "JSON nested too deeply") from None
        self.records += 1

    def _parse_feed(self, data: bytes) -> None:
        first = data.find(b"\n")
        if first < 0:
            self._carry += data
            if len(self._carry) > self._max:
                raise self._fail(self._lines + 1, f"longer than {self._max} bytes")
            return
        head = self._carry + data[:first] if self._carry else data[:first]
        if len(head) > self._max:
            raise self._fail(self._lines + 1, f"longer than {self._max} bytes")
        if head:
            self._check_line(head, self._lines + 1)
        self._lines += 1
        last = data.rfind(b"\n")
        self._carry = data[last + 1 :]
        if last == first:
            return
        block = data[first + 1 : last]
        lines = block.split(b"\n")
        base = self._lines
        self._lines += len(lines)
        if len(block) > self._max and max(map(len, lines)) > self._max:
            self._check_lines(lines, base)  # names the long line
        # Fast path: the block's lines go through the decoder with no Python code per
        # line. Whole lines hold whole UTF-8 sequences, so the block's UTF-8 can be
        # checked at once. Any failure, or an empty line, takes the slow path, which
        # finds and names the offending line.
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                self._check_lines(lines, base)
                return
        try:
            deque(map(_decode_object, lines), maxlen=0)
        except _JSON_ERRORS:
            self._check_lines(lines, base)
            return
        self.records += len(lines)

    def _check_lines(self, lines: list[bytes], base: int) -> None:
        for i, line in enumerate(lines):
            if len(line) > self._max:
                raise self._fail(base + i + 1, f"longer than {self._max} bytes")
            if line:
                self._check_line(line, base + i + 1)

    def finish(self) -> int:
        """Check a last line without a newline; return the record count."""
        self._release_held_back()
        if self._carry:
            self._check_line(self._carry, self._lines + 1)
            self._carry = b""
        return self.records


class CsvValidator(_TextValidator):
    """UTF-8 CSV with a header; every row has the header's number of fields.

    Chunks are cut at their last line end (``\\n`` or ``\\r``) and parsed with the csv
    module in strict mode. When the cut falls inside a quoted field, the parser reports
    the record as incomplete and its lines are carried into the next chunk, so the rows
    seen, and hence acceptance, are those of parsing the whole file at once.
    """

    def __init__(self, *, what: str, max_line_bytes: int) -> None:
        super().__init__(what=what, max_line_bytes=max_line_bytes)
        self._fields: int | None = None
        self._rows = 0  # rows seen including the header (for error positions)

    _COUNTERS = ("_rows", "_fields")

    def _fail(self, why: str, reason: str = "invalid_csv") -> ValidationFailed:
        return ValidationFailed(f"{self._what}: {why}", reason=reason)

    def _parse(self, block: bytes, *, final: bool) -> bytes:
        """Check the records of ``block``; return the bytes of an incomplete last one.

        ``block`` ends at a line end unless ``final``.
        """
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._fail(
                f"not UTF-8 near row {self._rows + 1} ({exc.reason})", reason="not_utf8"
            ) from None
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        complete = 0  # physical lines of the records parsed so far
        try:
            for row in reader:
                complete = reader.line_num
                if not row:
                    continue
                self._rows += 1
                if self._fields is None:
                    if not any(field.strip() for field in row):
                        raise self._fail("the header row is empty", reason="csv_no_header")
                    self._fields = len(row)
                    continue
                if len(row) != self._fields:
                    raise self._fail(
                        f"row {self._rows} has {len(row)} fields, the header has {self._fields}",
                        reason="csv_field_count",
                    )
                self.records += 1
        except csv.Error as exc:
            if final or str(exc) != _CSV_INCOMPLETE:
                raise self._fail(f"row {self._rows + 1}: {exc}") from None
            # The chunk ends inside a quoted field: that record continues in the next.
            lines = io.StringIO(text, newline="").readlines()
            return "".join(lines[complete:]).encode("utf-8")
        return b""

    def _parse_feed(self, data: bytes) -> None:
        if data.find(b"\n") < 0 and data.find(b"\r") < 0:
            self._carry += data  # no line ends here: nothing new can complete
        else:
            buf = self._carry + data if self._carry else data
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
            self._carry = self._parse(buf[:cut], final=False) + buf[cut:]
        if len(self._carry) > self._max:
            raise self._fail(
                f"a record longer than {self._max} bytes", reason="csv_record_too_long"
            )

    def finish(self) -> int:
        """Check the last record; return the number of data rows."""
        self._release_held_back()
        if self._carry:
            self._parse(self._carry, final=True)
            self._carry = b""
        if self._fields is None:
            raise self._fail("no header row", reason="csv_no_header")
        return self.records


def validator_for(fmt: ContentFormat, *, what: str, max_line_bytes: int) -> Validator:
    """The validator for content format ``fmt``."""
    if fmt == "jsonl":
        return JsonlValidator(what=what, max_line_bytes=max_line_bytes)
    if fmt == "csv":
        return CsvValidator(what=what, max_line_bytes=max_line_bytes)
    return BinaryValidator()
