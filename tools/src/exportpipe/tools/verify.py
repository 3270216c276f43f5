"""Checking what landed in S3 against what the simulator served, byte for byte.

The keys and records checked are those of :mod:`exportpipe.common.layout`: per file,
its members under ``data/``, its manifest (listing each member's key, size, sha256) or,
for a refused file, its rejection record with the reason.

:func:`verify_export` rebuilds every file's expected members from the same
:class:`~exportpipe.tools.simulator.ExportSpec` the simulator served and checks that each
good file's manifest names exactly the expected content (as a multiset of sha256
digests, so member naming is the worker's business) and that every object it names
hashes to what the manifest says. Each deliberately corrupt file must instead have a
rejection record with a reason and nothing under ``data/``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from exportpipe.common.layout import ExportKeys, FileManifest, FileRejection
from exportpipe.tools.simulator import ExportSpec, expected_files

__all__ = ["FileVerdict", "VerifyReport", "verify_export"]


@dataclass(frozen=True)
class FileVerdict:
    """One file's check.

    Attributes:
        file_id / name: as listed.
        expected: ``"landed"`` or ``"rejected"`` (a deliberately corrupt file).
        ok: the file is as expected.
        problem: what is wrong, when not ok.
        bytes: bytes of its members in S3 (landed files).
        reason: the recorded rejection reason (rejected files).
    """

    file_id: str
    name: str
    expected: str
    ok: bool
    problem: str | None = None
    bytes: int = 0
    members: int = 0
    reason: str | None = None


@dataclass
class VerifyReport:
    """The verdicts of every file of one export."""

    export_id: str
    root: str
    verdicts: list[FileVerdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every good file landed byte-exact and every corrupt one was rejected."""
        return all(v.ok for v in self.verdicts)

    @property
    def landed(self) -> list[FileVerdict]:
        """Good files that landed byte-exact."""
        return [v for v in self.verdicts if v.expected == "landed" and v.ok]

    @property
    def rejected(self) -> list[FileVerdict]:
        """Corrupt files rejected with a reason."""
        return [v for v in self.verdicts if v.expected == "rejected" and v.ok]

    @property
    def problems(self) -> list[FileVerdict]:
        """Files that are not as expected."""
        return [v for v in self.verdicts if not v.ok]

    @property
    def bytes(self) -> int:
        """Bytes landed."""
        return sum(v.bytes for v in self.verdicts)


def _get(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def _object_digest(s3: Any, bucket: str, key: str) -> tuple[str, int] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    digest, size = hashlib.sha256(), 0
    for chunk in body.iter_chunks(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _check_rejected(s3: Any, bucket: str, root: str, file_id: str, name: str) -> FileVerdict:
    def bad(problem: str, reason: str | None = None) -> FileVerdict:
        return FileVerdict(file_id, name, "rejected", ok=False, problem=problem, reason=reason)

    keys = ExportKeys.at(root).file(file_id)
    raw = _get(s3, bucket, keys.rejected)
    if raw is None:
        return bad("corrupt file has no rejection record")
    try:
        reason = FileRejection.from_json(raw).reason
    except ValueError as exc:
        return bad(f"unreadable rejection record: {exc}")
    if not reason:
        return bad("rejection record has no reason")
    if _get(s3, bucket, keys.manifest) is not None:
        return bad("corrupt file was committed (it has a manifest)", reason)
    if _keys(s3, bucket, keys.data_prefix):
        return bad("corrupt file left objects under data/", reason)
    return FileVerdict(file_id, name, "rejected", ok=True, reason=reason)


def _check_landed(
    s3: Any, bucket: str, root: str, file_id: str, name: str, *, expected: list[str]
) -> FileVerdict:
    def bad(problem: str) -> FileVerdict:
        return FileVerdict(file_id, name, "landed", ok=False, problem=problem)

    keys = ExportKeys.at(root).file(file_id)
    raw = _get(s3, bucket, keys.manifest)
    if raw is None:
        rejection = _get(s3, bucket, keys.rejected)
        if rejection is not None:
            try:
                reason = FileRejection.from_json(rejection).reason
            except ValueError as exc:
                reason = f"unreadable rejection record: {exc}"
            return bad(f"good file was rejected ({reason})")
        return bad("missing: no manifest")
    try:
        members = FileManifest.from_json(raw).members
    except ValueError as exc:
        return bad(f"unreadable manifest: {exc}")
    seen: list[str] = []
    total = 0
    for member in members:
        found = _object_digest(s3, bucket, member.key)
        if found is None:
            return bad(f"member {member.path} is missing at {member.key}")
        digest, size = found
        if digest != member.sha256 or size != member.size:
            return bad(f"member {member.path} differs from its manifest entry")
        seen.append(digest)
        total += size
    if Counter(seen) != Counter(expected):
        return bad(
            f"content differs from the source: {len(seen)} member(s) landed, "
            f"{len(expected)} expected, {len(set(seen) & set(expected))} identical"
        )
    stray = _keys(s3, bucket, keys.data_prefix) - {m.key for m in members}
    if stray:
        return bad(f"{len(stray)} object(s) under data/ not in the manifest")
    return FileVerdict(file_id, name, "landed", ok=True, bytes=total, members=len(members))


def verify_export(s3: Any, bucket: str, root: str, spec: ExportSpec) -> VerifyReport:
    """Check every file of ``spec`` under ``s3://bucket/root`` (see the module docstring).

    Args:
        s3: a boto3 S3 client on the stack.
        bucket: the output bucket.
        root: the export's root prefix, ``{prefix}{export_id}/``.
        spec: the export the simulator served.
    """
    report = VerifyReport(export_id=spec.export_id, root=root)
    for item in expected_files(spec):
        file_id, name = item.spec.file_id, item.spec.name
        if item.spec.corrupt is not None:
            report.verdicts.append(_check_rejected(s3, bucket, root, file_id, name))
            continue
        members = item.content.members or ()
        expected = [hashlib.sha256(data).hexdigest() for _name, data in members]
        report.verdicts.append(_check_landed(s3, bucket, root, file_id, name, expected=expected))
    return report
