"""The S3 body patch changes how many copies moto makes, not what S3 answers.

The same uploads run twice in fresh processes, once on moto as released and once with
:func:`patch_s3` applied, and every answer is compared: ETags, whole-object and
composite checksums, bodies, and the errors of a wrong ETag, a small part before the
last and an empty part list.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_SCRIPT = r"""
import hashlib, json, sys
import boto3
from botocore.exceptions import ClientError
from moto import mock_aws

if sys.argv[1] == "patched":
    from exportpipe.testing.moto_patches import patch_s3
    patch_s3()
    patch_s3()  # idempotent

PART = 4096  # moto's smallest part, lowered through S3_UPLOAD_PART_MIN_SIZE below
out = {}

def sha(body):
    return hashlib.sha256(body).hexdigest()

with mock_aws():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="patch-check")

    def multipart(key, sizes, algorithm=None, mangle=None):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        upload = s3.create_multipart_upload(Bucket="patch-check", Key=key, **extra)["UploadId"]
        parts = []
        for number, size in enumerate(sizes, start=1):
            body = bytes([number]) * size
            r = s3.upload_part(
                Bucket="patch-check", Key=key, UploadId=upload, PartNumber=number,
                Body=body, **extra,
            )
            part = {"PartNumber": number, "ETag": r["ETag"]}
            if algorithm:
                part[f"Checksum{algorithm}"] = r[f"Checksum{algorithm}"]
            parts.append(part)
        if mangle:
            parts = mangle(parts)
        try:
            r = s3.complete_multipart_upload(
                Bucket="patch-check", Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except ClientError as exc:
            return {"error": exc.response["Error"]["Code"]}
        head = s3.head_object(Bucket="patch-check", Key=key, ChecksumMode="ENABLED")
        body = s3.get_object(Bucket="patch-check", Key=key)["Body"].read()
        return {
            "etag": r["ETag"],
            "complete": {k: v for k, v in r.items() if k.startswith("Checksum")},
            "head": {k: v for k, v in head.items() if k.startswith("Checksum")},
            "length": head["ContentLength"],
            "body": sha(body),
        }

    out["sha256"] = multipart("a", [PART, PART + 7, 100], "SHA256")
    out["crc32"] = multipart("b", [PART * 3, 1], "CRC32")
    out["default"] = multipart("c", [PART, PART])
    out["one"] = multipart("d", [10], "SHA256")
    out["wrong etag"] = multipart(
        "e", [PART, 5], "SHA256", lambda p: [p[0], {**p[1], "ETag": '"0" * 32'}]
    )
    out["small first"] = multipart("f", [10, PART], "SHA256")
    out["no parts"] = multipart("g", [PART], "SHA256", lambda p: [])
    for name, size in (("small put", 100), ("large put", PART * 5 + 3)):
        body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        s3.put_object(Bucket="patch-check", Key=name, Body=body)
        s3.put_object(Bucket="patch-check", Key=name, Body=body[: size // 2])  # overwrite
        got = s3.get_object(Bucket="patch-check", Key=name)["Body"].read()
        out[name] = [sha(got), len(got)]
print(json.dumps(out, sort_keys=True))
"""


def _answers(mode: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "S3_UPLOAD_PART_MIN_SIZE": "4096",
        # Bodies above 2 KiB spool to disk: the roll-over path runs for most of them.
        "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": "2048",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers: dict[str, Any] = json.loads(done.stdout)
    return answers


def test_patched_s3_answers_exactly_as_moto_does() -> None:
    plain, patched = _answers("plain"), _answers("patched")
    assert patched == plain
    # The comparison covered what it claims to cover.
    assert plain["sha256"]["etag"].endswith('-3"')
    assert plain["sha256"]["head"]["ChecksumSHA256"]
    assert plain["crc32"]["head"]["ChecksumCRC32"]
    assert {plain[k]["error"] for k in ("wrong etag", "small first", "no parts")} == {
        "InvalidPart",
        "EntityTooSmall",
        "MalformedXML",
    }
    assert plain["large put"][1] == (4096 * 5 + 3) // 2
