"""Byte-exact verification of what landed in S3 against the simulator's spec."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from exportpipe.common.layout import (
    ExportKeys,
    FileManifest,
    FileRejection,
    ManifestMember,
    SourceRef,
)
from exportpipe.tools.simulator import ExportSpec, FileSpec, expected_files
from exportpipe.tools.verify import verify_export

ROOT = "exports/exp-v/"


def _spec() -> ExportSpec:
    return ExportSpec(
        export_id="exp-v",
        files=(FileSpec(file_id="bad", name="bad.bin", kind="bin", corrupt="flip_byte"),),
        generated=4,
        kinds=("jsonl.gz", "csv.zip", "jsonl.tar.gz", "csv"),
        file_size=2048,
    )


def _land(s3: Any, bucket: str, spec: ExportSpec) -> None:
    """Write what a correct worker writes: members, a manifest per file, a rejection."""
    keys = ExportKeys.at(ROOT)
    for item in expected_files(spec):
        file_id = item.file_id
        source = SourceRef(url="https://vendor.test/" + item.spec.name)
        common = {"job_id": "0" * 32, "export_id": spec.export_id, "file_id": file_id}
        if item.spec.corrupt:
            rejection = FileRejection(
                **common,
                file_name=item.spec.name,
                source=source,
                error="IntegrityError",
                reason="sha256_mismatch",
                message="sha256 differs",
            )
            s3.put_object(Bucket=bucket, Key=keys.file(file_id).rejected, Body=rejection.to_json())
            continue
        members = []
        for name, data in item.content.members or ():
            key = keys.file(file_id).member(name)
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            members.append(
                ManifestMember(
                    path=name, key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest()
                )
            )
        manifest = FileManifest(
            **common, file_name=item.spec.name, format="binary", source=source, members=members
        )
        s3.put_object(Bucket=bucket, Key=keys.file(file_id).manifest, Body=manifest.to_json())


def test_a_correct_landing_verifies(s3: Any, bucket: str) -> None:
    spec = _spec()
    _land(s3, bucket, spec)
    report = verify_export(s3, bucket, ROOT, spec)
    assert report.ok, report.problems
    assert [v.file_id for v in report.landed] == ["f000000", "f000001", "f000002", "f000003"]
    assert [(v.file_id, v.reason) for v in report.rejected] == [("bad", "sha256_mismatch")]
    assert report.landed[1].members == 2  # the zip's CSV members
    assert report.bytes == sum(
        len(data)
        for item in expected_files(spec)
        if not item.spec.corrupt
        for _name, data in item.content.members or ()
    )


def _first_member_key(s3: Any, bucket: str, file_id: str) -> tuple[str, dict[str, Any]]:
    key = f"{ROOT}manifests/{file_id}.json"
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return key, manifest


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("flip", "differs from its manifest entry"),
        ("consistent_flip", "content differs from the source"),
        ("missing_manifest", "missing: no manifest"),
        ("stray", "not in the manifest"),
        ("corrupt_committed", "corrupt file was committed"),
        ("no_rejection", "no rejection record"),
    ],
)
def test_every_kind_of_damage_is_caught(s3: Any, bucket: str, damage: str, problem: str) -> None:
    spec = _spec()
    _land(s3, bucket, spec)
    key, manifest = _first_member_key(s3, bucket, "f000001")
    member = manifest["members"][0]
    data = s3.get_object(Bucket=bucket, Key=member["key"])["Body"].read()
    changed = data[:-1] + bytes([data[-1] ^ 1])
    if damage == "flip":
        s3.put_object(Bucket=bucket, Key=member["key"], Body=changed)
    elif damage == "consistent_flip":  # manifest and object agree, the source does not
        s3.put_object(Bucket=bucket, Key=member["key"], Body=changed)
        member["sha256"] = hashlib.sha256(changed).hexdigest()
        s3.put_object(Bucket=bucket, Key=key, Body=orjson.dumps(manifest))
    elif damage == "missing_manifest":
        s3.delete_object(Bucket=bucket, Key=key)
    elif damage == "stray":
        s3.put_object(Bucket=bucket, Key=f"{ROOT}data/f000001/leftover.part", Body=b"x")
    elif damage == "corrupt_committed":
        s3.put_object(Bucket=bucket, Key=f"{ROOT}manifests/bad.json", Body=b"{}")
    elif damage == "no_rejection":
        s3.delete_object(Bucket=bucket, Key=f"{ROOT}rejected/bad.json")
    report = verify_export(s3, bucket, ROOT, spec)
    assert not report.ok
    [bad] = report.problems
    assert problem in (bad.problem or "")
