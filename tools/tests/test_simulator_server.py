"""The Export API simulator over real HTTP: contract v1, file bytes, ranges and faults."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exportpipe.tools.simulator import (
    ExportSpec,
    Fault,
    FileSpec,
    RandomFaults,
    SimulatorConfig,
    SimulatorServer,
    expected_files,
)

TOKEN = "t0ken"


class Reply:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers

    def json(self) -> Any:
        return json.loads(self.body)


def get(url: str, *, token: str | None = TOKEN, headers: dict[str, str] | None = None) -> Reply:
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), dict(e.headers))


def post(url: str, body: Any, *, token: str = TOKEN) -> Reply:
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), dict(e.headers))


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(token=TOKEN) as server:
        yield server


def walk(sim: SimulatorServer, export_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = []
        if cursor:
            query.append(f"cursor={cursor}")
        if limit:
            query.append(f"limit={limit}")
        reply = get(f"{sim.url}/v1/exports/{export_id}/files?{'&'.join(query)}")
        assert reply.status == 200, reply.body
        page = reply.json()
        pages.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def test_status_and_paginated_listing_with_an_empty_page(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("exp-1", 23, page_size=10, empty_pages={1}))

    status = get(f"{sim.url}/v1/exports/exp-1")
    assert status.status == 200
    assert status.json() == {"export_id": "exp-1", "status": "ready", "file_count": 23}

    pages = walk(sim, "exp-1")
    assert [len(p["files"]) for p in pages] == [10, 0, 10, 3]
    assert pages[1]["next_cursor"] is not None
    ids = [f["file_id"] for p in pages for f in p["files"]]
    assert ids == [f"f{i:06d}" for i in range(23)]
    assert [len(p["files"]) for p in walk(sim, "exp-1", limit=4)][:3] == [4, 0, 4]


def test_listing_matches_expected_content_and_every_byte_is_served(sim: SimulatorServer) -> None:
    spec = ExportSpec.mixed("exp-2", 18, page_size=50, seed=5)
    sim.add_export(spec)
    listed = walk(sim, "exp-2")[0]["files"]
    expected = list(expected_files(spec))
    for entry, exp in zip(listed, expected, strict=True):
        assert entry["file_id"] == exp.file_id
        assert entry["sha256"] == exp.content.listed_sha256
        assert entry["size_bytes"] == len(exp.content.raw)
        assert entry["compression"] == exp.spec.info.compression
        assert entry["format"] == exp.spec.info.format
        # File URLs are presigned-style: no bearer token needed, signature in the query.
        body = get(entry["url"], token=None)
        assert body.status == 200
        assert hashlib.sha256(body.body).hexdigest() == entry["sha256"]
        assert body.body == exp.content.raw


def test_declared_fields_can_be_null_or_overridden(sim: SimulatorServer) -> None:
    files = (
        FileSpec(
            file_id="n",
            name="n.gz",
            declare_compression=False,
            declare_sha256=False,
            declare_size=False,
        ),
        FileSpec(
            file_id="u",
            name="u.jsonl",
            kind="jsonl",
            url="file:///etc/passwd",
            listed_sha256="not-a-sha",
        ),
    )
    sim.add_export(ExportSpec(export_id="e", files=files))
    null_entry, odd_entry = walk(sim, "e")[0]["files"]
    assert null_entry["compression"] is None
    assert null_entry["sha256"] is None
    assert null_entry["size_bytes"] is None
    assert odd_entry["url"] == "file:///etc/passwd"
    assert odd_entry["sha256"] == "not-a-sha"


def test_auth_unknown_forbidden_and_bad_requests(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("e", 3))
    sim.add_export(ExportSpec.mixed("secret", 3, forbidden=True))
    no_token = get(f"{sim.url}/v1/exports/e", token=None)
    assert no_token.status == 401
    assert no_token.headers["WWW-Authenticate"] == "Bearer"
    assert get(f"{sim.url}/v1/exports/e", token="wrong").status == 401
    assert get(f"{sim.url}/v1/exports/missing").status == 404
    assert get(f"{sim.url}/v1/exports/missing/files").status == 404
    assert get(f"{sim.url}/v1/exports/secret").status == 403
    assert get(f"{sim.url}/v1/exports/e/files?cursor=forged.0000").status == 400
    assert get(f"{sim.url}/v1/exports/e/files?limit=0").status == 400
    assert get(f"{sim.url}/v1/exports/e/files?limit=x").status == 400
    assert get(f"{sim.url}/nothing-here").status == 404
    url = walk(sim, "e")[0]["files"][0]["url"]
    assert get(url.replace("sig=", "sig=0"), token=None).status == 403


def test_pending_then_running_then_ready(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("slow", 2, pending_polls=4))
    seen = [get(f"{sim.url}/v1/exports/slow").json()["status"] for _ in range(2)]
    listing = get(f"{sim.url}/v1/exports/slow/files")
    assert listing.status == 409
    assert listing.json()["status"] == "running"
    seen.append(get(f"{sim.url}/v1/exports/slow").json()["status"])
    assert seen == ["pending", "pending", "running"]
    ready = get(f"{sim.url}/v1/exports/slow").json()
    assert ready == {"export_id": "slow", "status": "ready", "file_count": 2}
    assert get(f"{sim.url}/v1/exports/slow/files").status == 200


@pytest.mark.parametrize("final", ["failed", "expired"])
def test_failed_and_expired_exports(sim: SimulatorServer, final: str) -> None:
    sim.add_export(ExportSpec.mixed("x", 2, final_status=final, report_file_count=False))
    assert get(f"{sim.url}/v1/exports/x").json() == {
        "export_id": "x",
        "status": final,
        "file_count": None,
    }
    listing = get(f"{sim.url}/v1/exports/x/files")
    assert listing.status == 409
    assert listing.json()["status"] == final


def test_scripted_faults_apply_in_order_then_stop(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("e", 2))
    listing = f"{sim.url}/v1/exports/e/files"
    sim.inject(
        Fault(route="listing", status=429, retry_after=7),
        Fault(route="listing", status=500, times=2),
        Fault(route="listing", malformed="json"),
        Fault(route="listing", malformed="shape"),
    )
    first = get(listing)
    assert (first.status, first.headers["Retry-After"]) == (429, "7")
    assert [get(listing).status for _ in range(2)] == [500, 500]
    with pytest.raises(json.JSONDecodeError):
        get(listing).json()
    assert "files" not in get(listing).json()
    assert get(listing).status == 200
    # Faults narrowed to another export or route leave this one alone.
    sim.inject(Fault(route="status", export_id="other", status=503))
    assert get(listing).status == 200
    assert get(f"{sim.url}/v1/exports/e").status == 200
    assert [r.status for r in sim.requests("listing")][:4] == [429, 500, 500, 200]


def test_slow_responses(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("e", 1))
    sim.inject(Fault(route="status", delay_seconds=0.3))
    started = time.monotonic()
    assert get(f"{sim.url}/v1/exports/e").status == 200
    assert time.monotonic() - started >= 0.3


def test_random_faults_are_seeded() -> None:
    def statuses() -> list[int]:
        faults = RandomFaults(seed=11, api_error_rate=0.3, rate_limit_rate=0.2)
        with SimulatorServer([ExportSpec.mixed("e", 1, faults=faults)], token=TOKEN) as s:
            return [get(f"{s.url}/v1/exports/e").status for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert {200, 429, 500} <= set(first)


def test_range_requests_resume_a_download(sim: SimulatorServer) -> None:
    spec = ExportSpec(
        export_id="e", files=(FileSpec(file_id="a", name="a.bin", kind="bin", size_bytes=300_000),)
    )
    sim.add_export(spec)
    url = walk(sim, "e")[0]["files"][0]["url"]
    raw = sim.content("e", "a").raw

    full = get(url, token=None)
    assert full.headers["Accept-Ranges"] == "bytes"
    etag = full.headers["ETag"]
    tail = get(url, token=None, headers={"Range": "bytes=1000-"})
    assert tail.status == 206
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(raw) - 1}/{len(raw)}"
    assert tail.body == raw[1000:]
    middle = get(url, token=None, headers={"Range": "bytes=10-19"})
    assert (middle.status, middle.body) == (206, raw[10:20])
    suffix = get(url, token=None, headers={"Range": "bytes=-5"})
    assert suffix.body == raw[-5:]
    beyond = get(url, token=None, headers={"Range": f"bytes={len(raw)}-"})
    assert beyond.status == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(raw)}"
    multi = get(url, token=None, headers={"Range": "bytes=0-1,5-6"})
    assert (multi.status, len(multi.body)) == (200, len(raw))
    same = get(url, token=None, headers={"Range": "bytes=5-", "If-Range": etag})
    assert same.status == 206
    changed = get(url, token=None, headers={"Range": "bytes=5-", "If-Range": '"other"'})
    assert (changed.status, changed.body) == (200, raw)


def _raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, int, bytes]:
    """GET through http.client, returning (status, content-length, bytes actually read)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
    resp = conn.getresponse()
    length = int(resp.headers["Content-Length"])
    chunks = []
    try:
        while chunk := resp.read1(65536):
            chunks.append(chunk)
    except http.client.IncompleteRead as exc:
        chunks.append(exc.partial)
    conn.close()
    return resp.status, length, b"".join(chunks)


def test_truncated_downloads_can_be_resumed(sim: SimulatorServer) -> None:
    spec = FileSpec(file_id="t", name="t.bin", kind="bin", size_bytes=200_000, truncate_times=1)
    sim.add_export(ExportSpec(export_id="e", files=(spec,)))
    url = walk(sim, "e")[0]["files"][0]["url"]
    raw = sim.content("e", "t").raw

    status, length, got = _raw_get(url)
    assert (status, length) == (200, len(raw))
    assert 0 < len(got) < len(raw)
    assert got == raw[: len(got)]
    status, _, rest = _raw_get(url, {"Range": f"bytes={len(got)}-"})
    assert status == 206
    assert got + rest == raw
    # A scripted truncation at an exact offset, on a later download.
    sim.inject(Fault(route="download", file_id="t", truncate_at=1234))
    assert len(_raw_get(url)[2]) == 1234


def test_download_faults_and_throttled_rate(sim: SimulatorServer) -> None:
    faults = RandomFaults(download_bytes_per_second=400_000)
    spec = ExportSpec(
        export_id="e",
        files=(FileSpec(file_id="a", name="a.bin", kind="bin", size_bytes=200_000),),
        faults=faults,
    )
    sim.add_export(spec)
    url = walk(sim, "e")[0]["files"][0]["url"]
    sim.inject(Fault(route="download", status=503, retry_after=1))
    failed = get(url, token=None)
    assert (failed.status, failed.headers["Retry-After"]) == (503, "1")
    started = time.monotonic()
    assert len(get(url, token=None).body) == 200_000
    assert time.monotonic() - started >= 0.4


def test_files_base_url_points_listings_elsewhere() -> None:
    spec = ExportSpec.mixed("e", 1)
    with SimulatorServer([spec], token=TOKEN, files_base_url="http://localhost:9/") as s:
        url = walk(s, "e")[0]["files"][0]["url"]
        assert url.startswith("http://localhost:9/files/e/f000000/")


def test_control_routes_add_exports_and_faults(sim: SimulatorServer) -> None:
    assert get(f"{sim.url}/_sim/health").json()["ok"] is True
    assert get(f"{sim.url}/_sim/health", token=None).status == 401
    created = post(f"{sim.url}/_sim/exports", ExportSpec.mixed("remote", 4).model_dump(mode="json"))
    assert created.status == 201
    assert created.json() == {"export_id": "remote", "file_count": 4}
    assert post(f"{sim.url}/_sim/exports", {"export_id": "bad id!"}).status == 400
    assert post(f"{sim.url}/_sim/faults", [{"route": "status", "status": 502}]).status == 201
    assert get(f"{sim.url}/v1/exports/remote").status == 502
    assert get(f"{sim.url}/v1/exports/remote").status == 200
    log = get(f"{sim.url}/_sim/requests").json()["requests"]
    assert [r["status"] for r in log if r["route"] == "status"] == [502, 200]
    assert all("?" not in r["path"] for r in log)


def test_runs_as_a_separate_process(tmp_path: Path) -> None:
    config = SimulatorConfig(token="proc-token", exports=(ExportSpec.mixed("p", 3),))
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(config.model_dump_json())
    url_file = tmp_path / "url.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exportpipe.tools.simulator",
            "--exports",
            str(spec_file),
            "--url-file",
            str(url_file),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["token"] == "proc-token"
        assert json.loads(url_file.read_text()) == line
        reply = get(f"{line['url']}/v1/exports/p", token="proc-token")
        assert reply.json()["file_count"] == 3
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_process_rejects_an_unreadable_spec(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"exports": [{"export_id": 5}]}')
    result = subprocess.run(
        [sys.executable, "-m", "exportpipe.tools.simulator", "--exports", str(bad)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"cannot read" in result.stderr
