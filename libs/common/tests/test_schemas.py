from __future__ import annotations

import orjson
import pytest

from exportpipe.common.errors import MalformedMessage, PermanentError, UnsupportedSchemaVersion
from exportpipe.common.layout import S3_MAX_KEY_BYTES, export_root, is_export_root
from exportpipe.common.schemas import (
    ID_MAX_LENGTH,
    PREFIX_MAX_LENGTH,
    DownloadJob,
    ExportRequested,
    S3Destination,
    decode,
    encode,
    is_valid_id,
    job_id_for,
)


def _job(**overrides: object) -> DownloadJob:
    fields: dict[str, object] = {
        "job_id": job_id_for("exp-1", "file-1"),
        "export_id": "exp-1",
        "file_id": "file-1",
        "file_name": "part-0001.jsonl.gz",
        "url": "https://files.example.com/part-0001.jsonl.gz?sig=abc",
        "size_bytes": 123,
        "sha256": "A" * 64,
        "compression": "gzip",
        "format": "jsonl",
        "destination": S3Destination(bucket="bucket-1", prefix="exports/exp-1/"),
    }
    fields.update(overrides)
    return DownloadJob.model_validate(fields)


def test_download_job_round_trip() -> None:
    job = _job()
    body = encode(job)
    assert orjson.loads(body)["schema"] == "exportpipe.DownloadJob"
    assert orjson.loads(body)["version"] == 1
    assert decode(body, DownloadJob) == job
    assert job.sha256 == "a" * 64  # normalised to lower case


def test_export_requested_round_trip_with_continuation() -> None:
    request = ExportRequested(export_id="exp-1", tenant="acme", cursor="c2", page=2)
    assert decode(encode(request).encode(), ExportRequested) == request


def test_job_id_is_deterministic_and_distinct() -> None:
    assert job_id_for("e", "f") == job_id_for("e", "f")
    assert job_id_for("e", "f") != job_id_for("e", "g")
    assert job_id_for("e1", "f") != job_id_for("e", "1f")


def test_job_id_must_match_its_pair() -> None:
    body = orjson.loads(encode(_job()))
    body["file_id"] = "file-2"
    with pytest.raises(MalformedMessage, match="job_id does not match"):
        decode(orjson.dumps(body), DownloadJob)


def test_future_version_is_a_named_permanent_error() -> None:
    body = orjson.loads(encode(_job()))
    body["version"] = 2
    with pytest.raises(UnsupportedSchemaVersion, match="version 2 is not supported") as info:
        decode(orjson.dumps(body), DownloadJob)
    assert isinstance(info.value, PermanentError)


def test_unknown_fields_of_same_version_are_ignored() -> None:
    job = _job()
    body = orjson.loads(encode(job))
    body["added_in_a_later_minor_release"] = {"x": 1}
    assert decode(orjson.dumps(body), DownloadJob) == job


def test_wrong_schema_name() -> None:
    with pytest.raises(UnsupportedSchemaVersion, match="expected schema"):
        decode(encode(ExportRequested(export_id="e")), DownloadJob)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x00\xffnot json", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"schema": "exportpipe.DownloadJob", "version": "1"}', "version must be an integer"),
        (b'{"schema": "exportpipe.DownloadJob", "version": 1}', "Field required"),
        (b"", "not JSON"),
    ],
)
def test_garbage_bodies(body: bytes, match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        decode(body, DownloadJob)


@pytest.mark.parametrize("prefix", ["/abs/", "a/../b/", "a\\b/"])
def test_destination_prefix_must_be_relative(prefix: str) -> None:
    with pytest.raises(MalformedMessage):
        decode(encode_raw({"export_id": "e", "destination_prefix": prefix}), ExportRequested)


def test_destination_prefix_gets_trailing_slash() -> None:
    assert ExportRequested(export_id="e", destination_prefix="team/x").destination_prefix == (
        "team/x/"
    )


def encode_raw(fields: dict[str, object]) -> bytes:
    return orjson.dumps({"schema": ExportRequested.SCHEMA, "version": 1, **fields})


@pytest.mark.parametrize(
    "bad", [".", "..", ".hidden", "-x", "a/b", "a b", "é", "x" * 129, "", "a\\b"]
)
@pytest.mark.parametrize("field", ["export_id", "file_id"])
def test_ids_follow_one_rule(field: str, bad: str) -> None:
    export_id, file_id = ("exp-1", "file-1")
    if field == "export_id":
        export_id = bad
    else:
        file_id = bad
    with pytest.raises(ValueError, match=field):
        _job(**{field: bad, "job_id": job_id_for(export_id, file_id)})
    assert not is_valid_id(bad)


@pytest.mark.parametrize("good", ["exp-2024-05-01", "f000001", "a..b", "v1:part_7.x", "x" * 128])
def test_ids_that_follow_the_rule(good: str) -> None:
    assert is_valid_id(good)
    assert _job(file_id=good, job_id=job_id_for("exp-1", good)).file_id == good


def test_longest_ids_and_prefix_keep_every_fixed_key_within_s3_limit() -> None:
    base = "p" * (PREFIX_MAX_LENGTH - 1) + "/"
    root = export_root(base, "e" * ID_MAX_LENGTH)
    longest = f"{root}manifests/{'f' * ID_MAX_LENGTH}.json"
    assert len(longest.encode()) <= S3_MAX_KEY_BYTES
    with pytest.raises(ValueError, match="destination_prefix"):
        ExportRequested(export_id="e", destination_prefix="p" * PREFIX_MAX_LENGTH)


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("exports/exp-1/", True),
        ("exports/tenants/acme/exp-1/", True),
        ("exports/exp-2/", False),  # another export's folder
        ("exports/exp-2/exp-1/", True),  # a folder named exp-1 under a destination prefix
        ("exports/", False),
        ("exports/exp-1", False),
        ("other/exp-1/", False),
        ("exports/../exp-1/", False),
    ],
)
def test_destination_must_be_the_exports_own_folder(prefix: str, expected: bool) -> None:
    assert is_export_root(prefix, "exp-1", output_prefix="exports/") is expected
