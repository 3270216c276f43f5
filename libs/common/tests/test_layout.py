"""The output contract: keys, the destination rule, and the stored records."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from exportpipe.common.layout import (
    ExportKeys,
    ExportManifest,
    FileManifest,
    FileRejection,
    ManifestMember,
    RejectedFile,
    SourceRef,
    export_root,
    is_under,
    relative_prefix,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def _manifest(**changes: object) -> FileManifest:
    fields: dict[str, object] = {
        "job_id": "a" * 32,
        "export_id": "exp-1",
        "file_id": "f-1",
        "file_name": "orders.csv.zip",
        "format": "csv",
        "compression": "zip",
        "source": SourceRef(url="https://vendor.test/orders.csv.zip", size=10, sha256="b" * 64),
        "members": [
            ManifestMember(path="a.csv", key="exports/exp-1/data/f-1/a.csv", size=4, sha256="c")
        ],
    }
    return FileManifest.model_validate(fields | changes)


def test_every_key_of_an_export() -> None:
    export = ExportKeys.of("exports/", "exp-1")
    keys = export.file("f-1")
    assert export.root == "exports/exp-1/"
    assert export.manifest == "exports/exp-1/_manifest.json"
    assert keys.data_prefix == "exports/exp-1/data/f-1/"
    assert keys.member("dir/a.csv") == "exports/exp-1/data/f-1/dir/a.csv"
    assert keys.manifest == "exports/exp-1/manifests/f-1.json"
    assert keys.rejected == "exports/exp-1/rejected/f-1.json"


@pytest.mark.parametrize(
    ("prefix", "root"),
    [("exports/", "exports/e/"), ("exports", "exports/e/"), ("", "e/"), ("a/b/", "a/b/e/")],
)
def test_export_root_normalises_the_prefix(prefix: str, root: str) -> None:
    assert export_root(prefix, "e") == root


@pytest.mark.parametrize("prefix", ["/abs/", "a/../b/", "..", "a\\b/"])
def test_unsafe_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="not a relative key prefix"):
        relative_prefix(prefix)
    with pytest.raises(ValueError, match="not a relative key prefix"):
        ExportKeys.at(prefix)


def test_destination_must_lie_under_the_output_prefix() -> None:
    assert is_under("exports/team-a/", "exports/")
    assert not is_under("elsewhere/", "exports/")


def test_records_round_trip_with_their_envelope_first() -> None:
    manifest = _manifest()
    raw = manifest.to_json()
    assert list(orjson.loads(raw))[:2] == ["schema", "version"]
    assert orjson.loads(raw)["schema"] == "exportpipe.FileManifest"
    assert FileManifest.from_json(raw) == manifest
    rejection = FileRejection(
        job_id="a" * 32,
        export_id="e",
        file_id="f",
        file_name="x.gz",
        source=SourceRef(url="https://vendor.test/x.gz"),
        error="IntegrityError",
        reason="truncated",
        message="ends early",
    )
    assert FileRejection.from_json(rejection.to_json()) == rejection


def test_readers_ignore_unknown_fields_of_their_version() -> None:
    body = orjson.loads(_manifest().to_json()) | {"added_later": 1}
    assert FileManifest.from_json(orjson.dumps(body)).file_id == "f-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "newer than this reader"),
        ({"schema": "exportpipe.FileRejected"}, "found a 'exportpipe.FileRejected' record"),
        ({"members": "no"}, "invalid field"),
    ],
)
def test_readers_refuse_what_they_cannot_read(change: dict[str, object], message: str) -> None:
    body = orjson.loads(_manifest().to_json()) | change
    with pytest.raises(ValueError, match=message):
        FileManifest.from_json(orjson.dumps(body))


@pytest.mark.parametrize("raw", [b"not json", b"[1]"])
def test_non_objects_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"exportpipe\.FileManifest: not"):
        FileManifest.from_json(raw)


@pytest.mark.parametrize(
    ("size", "sha256", "same"),
    [(10, "b" * 64, True), (None, None, True), (11, None, False), (None, "d" * 64, False)],
)
def test_same_source_compares_what_the_job_states(
    size: int | None, sha256: str | None, same: bool
) -> None:
    assert _manifest().same_source(size=size, sha256=sha256) is same


def test_export_manifest_streams_as_one_valid_document() -> None:
    head = ExportManifest(
        export_id="exp-1",
        tenant="acme",
        status="completed_with_errors",
        files_expected=2,
        files_done=1,
        files_rejected=1,
        bytes=4,
    )
    rejected = RejectedFile(file_id="f-2", reason="truncated: ends early")
    raw = (
        head.head_json()
        + _manifest().to_json()
        + b'],"rejected":['
        + rejected.model_dump_json().encode()
        + b"]}"
    )
    parsed = ExportManifest.from_json(raw)
    assert [f.file_id for f in parsed.files] == ["f-1"]
    assert parsed.rejected == [rejected]
    assert parsed.model_dump(exclude={"files", "rejected"}) == head.model_dump(
        exclude={"files", "rejected"}
    )


def _readme_examples() -> dict[str, dict[str, object]]:
    text = README.read_text()
    found: dict[str, dict[str, object]] = {}
    for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL):
        body = orjson.loads(block)
        if isinstance(body, dict) and "schema" in body:
            found[str(body["schema"])] = body
    return found


def test_the_readme_documents_every_record_as_it_is_written() -> None:
    examples = _readme_examples()
    FileManifest.model_validate(examples["exportpipe.FileManifest"])
    FileRejection.model_validate(examples["exportpipe.FileRejected"])
    documented = set(examples["exportpipe.ExportManifest"])
    written = {field.alias or name for name, field in ExportManifest.model_fields.items()}
    assert documented == written
