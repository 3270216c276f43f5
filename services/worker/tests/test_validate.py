from __future__ import annotations

import csv
import io
import json
import random

import pytest

from exportpipe.common.errors import ValidationFailed
from exportpipe.worker.validate import (
    BinaryValidator,
    CsvValidator,
    JsonlValidator,
    Validator,
    validator_for,
)


def _run(
    validator: Validator, data: bytes, *, seed: int = 0, max_chunk: int = 37, min_chunk: int = 1
) -> int | None:
    """Feed ``data`` in random-sized chunks (so lines and records straddle them)."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        step = rng.randint(min_chunk, max_chunk)
        validator.feed(data[pos : pos + step])
        pos += step
    return validator.finish()


def _jsonl(max_line: int = 1024) -> JsonlValidator:
    return JsonlValidator(what="m.jsonl", max_line_bytes=max_line)


def _csv(max_line: int = 1024) -> CsvValidator:
    return CsvValidator(what="m.csv", max_line_bytes=max_line)


JSONL = b'{"a": 1}\n{"b": "caf\xc3\xa9", "c": [1, 2]}\r\n\n   \n{"d": {"e": null}}'


@pytest.mark.parametrize("seed", range(5))
def test_jsonl_counts_objects_across_chunkings(seed: int) -> None:
    assert _run(_jsonl(), JSONL, seed=seed) == 3


def test_jsonl_whole_buffer() -> None:
    validator = _jsonl()
    validator.feed((JSONL + b"\n") * 1000)
    assert validator.finish() == 3000


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b'{"a": 1}\n[1, 2]\n', "line 2"),
        (b'{"a": 1}\n"text"\n', "line 2"),
        (b'{"a": 1}\n{"a": \n', "line 2"),
        (b'{"a": 1}\n\n{"a": 1}\nnot json\n', "line 4"),
        (b'{"a": "\xff"}\n', "line 1"),
        (b'{"a": 1}\n{"a": 2}', None),
    ],
)
def test_jsonl_failures_name_the_line(data: bytes, where: str | None) -> None:
    if where is None:
        assert _run(_jsonl(), data) == 2
        return
    with pytest.raises(ValidationFailed) as info:
        _run(_jsonl(), data, max_chunk=5)
    assert where in info.value.message
    assert info.value.reason == "invalid_jsonl"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"a": 1} {"b": 2}\n', "not JSON"),  # two values on one line
        (b'{"a": [1\n2]}\n', "not JSON"),  # one value across two lines
        (b'{"a": [\n]}\n', "not JSON"),
        (b'{"a": NaN}\n', "not JSON"),
        (b'{"a": 1,}\n', "not JSON"),
        (b'{"a": "\\ud800"}\n', "not JSON"),  # a lone surrogate escape
        (b'{"a": "x\x01"}\n', "not JSON"),  # a raw control character
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", "JSON nested too deeply"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'{"caf\xc3": 1}\n', "not UTF-8"),
    ],
)
@pytest.mark.parametrize("chunked", [True, False])
def test_jsonl_rejects(data: bytes, why: str, chunked: bool) -> None:
    """Each bad line fails with its reason, in the fast block path and line by line."""
    block = b'{"ok": 1}\n' * 3 + data + b'{"ok": 2}\n'
    validator = _jsonl(max_line=1 << 20)
    chunk = 7 if chunked else len(block) + 1  # whole: one feed, the block fast path
    with pytest.raises(ValidationFailed) as info:
        _run(validator, block, max_chunk=chunk, min_chunk=chunk if not chunked else 1)
    assert "line 4: " + why in info.value.message
    assert info.value.reason == "invalid_jsonl"


def _json_object_reference(line: bytes) -> bool:
    """The oracle: strict UTF-8, the standard library's parser, no NaN/Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(line.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(value, dict)


def test_jsonl_agrees_with_the_standard_library_on_mutated_lines() -> None:
    """Random byte edits of valid lines: accepted exactly when ``json.loads`` gives a dict."""
    rng = random.Random(20261129)
    seeds = [
        json.dumps(
            {"id": i, "s": 'h\u00e9llo "q" \\ x', "f": -1.5e-3, "l": [1, {"b": None}, True]},
            ensure_ascii=bool(i % 2),
        ).encode()
        for i in range(20)
    ]
    alphabet = b'{}[]:,"\\01-+.eE tfnalr\xff\xc3\xa9\x00\x1f/'
    accepted = rejected = 0
    for _ in range(20_000):
        line = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line))
            edit = rng.random()
            if edit < 0.4:
                del line[at]
            elif edit < 0.8:
                line.insert(at, rng.choice(alphabet))
            else:
                line[at] = rng.choice(alphabet)
        line = line.replace(b"\n", b" ")
        expected = _json_object_reference(bytes(line)) or not line.strip()
        validator = _jsonl(max_line=1 << 20)
        try:
            validator.feed(bytes(line) + b"\n")
            validator.finish()
        except ValidationFailed:
            assert not expected, line
            rejected += 1
        else:
            assert expected, line
            accepted += 1
    assert accepted > 1000
    assert rejected > 1000


def test_jsonl_line_length_limit() -> None:
    long_line = b'{"a": "' + b"x" * 2000 + b'"}\n'
    with pytest.raises(ValidationFailed) as info:
        _run(_jsonl(max_line=1024), b'{"a": 1}\n' + long_line)
    assert "longer than 1024" in info.value.message
    validator = _jsonl(max_line=1024)
    with pytest.raises(ValidationFailed):
        validator.feed(b'{"a": 1}\n' + long_line + b'{"b": 2}\n')
    # An endless line with no newline at all is caught while buffering.
    validator = _jsonl(max_line=1024)
    for _ in range(10):
        validator.feed(b"x" * 100)
    with pytest.raises(ValidationFailed):
        validator.feed(b"x" * 100)


CSV = b'id,name,note\r\n1,"Smith, J","multi\nline"\n2,"say ""hi""",\n\n3,caf\xc3\xa9,x'


@pytest.mark.parametrize("seed", range(8))
def test_csv_quoted_fields_across_chunks(seed: int) -> None:
    assert _run(_csv(), CSV, seed=seed, max_chunk=7) == 3


def test_csv_bom_header_is_accepted() -> None:
    assert _run(_csv(), b"\xef\xbb\xbfa,b\n1,2\n") == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"a,b\n1,2\n3\n", "csv_field_count"),
        (b"a,b\n1,2,3\n", "csv_field_count"),
        (b"a,b\n1,\xff\n", "not_utf8"),
        (b"", "csv_no_header"),
        (b"\n\n", "csv_no_header"),
        (b",\n1,2\n", "csv_no_header"),
        (b'a,b\n1,"unterminated\n', "invalid_csv"),
    ],
)
def test_csv_failures(data: bytes, reason: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        _run(_csv(), data)
    assert info.value.reason == reason


def test_csv_record_length_limit() -> None:
    with pytest.raises(ValidationFailed) as info:
        _run(_csv(max_line=1024), b'a,b\n1,"' + b"y\n" * 2000 + b'"\n', max_chunk=500)
    assert info.value.reason == "csv_record_too_long"


def test_binary_accepts_anything() -> None:
    assert _run(BinaryValidator(), bytes(range(256)) * 10) is None


def test_validator_for_formats() -> None:
    assert isinstance(validator_for("jsonl", what="x", max_line_bytes=10), JsonlValidator)
    assert isinstance(validator_for("csv", what="x", max_line_bytes=10), CsvValidator)
    assert isinstance(validator_for("binary", what="x", max_line_bytes=10), BinaryValidator)


# -- acceptance never depends on chunk boundaries (issue #15) ---------------------


def _csv_reference(data: bytes) -> int | None:
    """Data rows of ``data`` per Python's csv module in strict mode; None if refused."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except (UnicodeDecodeError, csv.Error):
        return None
    if not rows or not any(f.strip() for f in rows[0]):
        return None
    if any(len(r) != len(rows[0]) for r in rows[1:]):
        return None
    return len(rows) - 1


def _csv_result(data: bytes, chunk: int) -> int | None:
    validator = _csv(max_line=1 << 30)
    try:
        for i in range(0, len(data), chunk):
            validator.feed(data[i : i + chunk])
        return validator.finish()
    except ValidationFailed:
        return None


CHUNKS = [1, 2, 3, 5, 8, 13, 64, 1000, 4096, 1 << 20]


def test_csv_stray_quote_in_an_unquoted_field_is_accepted_at_any_size() -> None:
    # One stray quote flips any quote-parity count for the rest of the file.
    stray = b'1,6" pipe,ok\n'
    row = b"2,elbow,ok\n"
    small = b"id,what,status\n" + stray + row * 2
    large = b"id,what,status\n" + stray + row * 19_999
    assert _csv_reference(small) == 3
    assert _csv_reference(large) == 20_000
    for chunk in CHUNKS:
        assert _csv_result(small, chunk) == 3, chunk
        validator = _csv(max_line=1024)  # the default-sized record limit is not hit
        for i in range(0, len(large), chunk * 97):
            validator.feed(large[i : i + chunk * 97])
        assert validator.finish() == 20_000, chunk


def test_csv_lone_cr_line_ends_do_not_depend_on_chunking() -> None:
    data = b"a,b\r" + b"1,2\r" * 5000
    assert _csv_reference(data) == 5000
    validator = _csv(max_line=1024)
    for i in range(0, len(data), 1000):
        validator.feed(data[i : i + 1000])
    assert validator.finish() == 5000


@pytest.mark.parametrize("seed", range(40))
def test_csv_agrees_with_the_csv_module_at_every_chunk_size(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [b"a", b"b", b",", b'"', b"\n", b"\r\n", b"\r", b" ", b"\xc3\xa9", b'""']
    pieces = [b"h1,h2\n"] + [rng.choice(alphabet) for _ in range(rng.randint(0, 60))]
    data = b"".join(pieces)
    expected = _csv_reference(data)
    for chunk in CHUNKS[:7]:
        assert _csv_result(data, chunk) == expected, (data, chunk)


def test_csv_rows_of_valid_files_agree_at_every_chunk_size() -> None:
    rng = random.Random(1)
    for _ in range(100):
        out = io.StringIO(newline="")
        writer = csv.writer(out)
        fields = rng.randint(1, 4)
        writer.writerow([f"h{i}" for i in range(fields)])
        for _ in range(rng.randint(0, 20)):
            writer.writerow(
                "".join(rng.choice('ab ,"\n\r\xe9') for _ in range(rng.randint(0, 6)))
                for _ in range(fields)
            )
        data = out.getvalue().encode()
        expected = _csv_reference(data)
        assert expected is not None, data
        for chunk in (1, 3, 7, 50):
            assert _csv_result(data, chunk) == expected, (data, chunk)


# -- one BOM rule for JSONL and CSV (ADR 0013) -----------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("max_chunk", [1, 2, 5, 100])
def test_a_leading_bom_is_accepted_by_jsonl_and_csv(max_chunk: int) -> None:
    assert _run(_jsonl(), BOM + b'{"a": 1}\n{"b": 2}\n', max_chunk=max_chunk) == 2
    assert _run(_csv(), BOM + b"a,b\n1,2\n", max_chunk=max_chunk) == 1
    assert _run(_jsonl(), BOM, max_chunk=max_chunk) == 0


@pytest.mark.parametrize("max_chunk", [1, 2, 5, 100])
def test_a_bom_anywhere_else_is_content(max_chunk: int) -> None:
    with pytest.raises(ValidationFailed):
        _run(_jsonl(), b'{"a": 1}\n' + BOM + b'{"b": 2}\n', max_chunk=max_chunk)
    with pytest.raises(ValidationFailed):
        _run(_jsonl(), BOM + BOM + b'{"b": 2}\n', max_chunk=max_chunk)
    # In CSV it is a character of the field it sits in: the header is then "\ufeffa".
    assert _run(_csv(), b"a,b\n" + BOM + b"1,2\n", max_chunk=max_chunk) == 1
    with pytest.raises(ValidationFailed):
        _run(_jsonl(), b"\xef\xbb", max_chunk=max_chunk)


@pytest.mark.parametrize("line", [b"\x0b", b"\x0c", b" \x0c ", b"\x1c"])
def test_jsonl_blank_lines_are_json_whitespace_only(line: bytes) -> None:
    with pytest.raises(ValidationFailed):
        _run(_jsonl(), b'{"a": 1}\n' + line + b"\n")
    assert _run(_jsonl(), b'{"a": 1}\n \t\r\n') == 1
