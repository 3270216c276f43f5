"""The contract v1 HTTP client against the simulator on a real socket."""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from exportpipe.common.errors import RateLimited, UpstreamRejected, UpstreamUnavailable
from exportpipe.orchestrator.http_source import HttpExportSource, _listed_file, parse_retry_after
from exportpipe.orchestrator.settings import ApiClientConfig
from exportpipe.orchestrator.source import ExportNotReady
from exportpipe.tools.simulator import ExportSpec, Fault, FileSpec, SimulatorServer

TOKEN = "api-token-123"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(token=TOKEN) as server:
        server.add_export(ExportSpec.mixed("e", 25, page_size=100))
        yield server


def client(sim: SimulatorServer, token: str = TOKEN, **kw: Any) -> HttpExportSource:
    options: dict[str, Any] = {"retry_attempts": 3, "retry_max_wait": 0.05, **kw}
    return HttpExportSource(sim.url, token, config=ApiClientConfig(**options))


def test_status_and_pages(sim: SimulatorServer) -> None:
    source = client(sim)
    info = source.get_export("e")
    assert (info.export_id, info.status, info.file_count) == ("e", "ready", 25)
    first = source.list_files("e", cursor=None, limit=10)
    assert len(first.files) == 10
    assert first.next_cursor is not None
    second = source.list_files("e", cursor=first.next_cursor, limit=20)
    assert [f.file_id for f in second.files] == [f"f{i:06d}" for i in range(10, 25)]
    assert second.next_cursor is None
    entry = first.files[0]
    content = sim.content("e", entry.file_id)
    assert (entry.sha256, entry.size_bytes) == (content.listed_sha256, content.listed_size)
    assert (entry.compression, entry.format) == ("gzip", "jsonl")
    source.close()


def test_base_url_may_already_end_in_v1(sim: SimulatorServer) -> None:
    assert HttpExportSource(f"{sim.url}/v1/", TOKEN).get_export("e").status == "ready"


@pytest.mark.parametrize(
    ("token", "export", "reason"),
    [
        ("wrong", "e", "upstream_unauthorized"),
        (TOKEN, "missing", "export_not_found"),
        (TOKEN, "locked", "upstream_forbidden"),
    ],
)
def test_permanent_refusals(sim: SimulatorServer, token: str, export: str, reason: str) -> None:
    sim.add_export(ExportSpec.mixed("locked", 1, forbidden=True))
    source = client(sim, token=token)
    for call in (
        lambda: source.get_export(export),
        lambda: source.list_files(export, cursor=None, limit=5),
    ):
        with pytest.raises(UpstreamRejected) as caught:
            call()
        assert caught.value.reason == reason
        assert TOKEN not in str(caught.value)
        assert "wrong" not in str(caught.value)


def test_409_means_not_ready(sim: SimulatorServer) -> None:
    sim.add_export(ExportSpec.mixed("later", 1, pending_polls=5))
    with pytest.raises(ExportNotReady) as caught:
        client(sim).list_files("later", cursor=None, limit=5)
    assert caught.value.status == "pending"


def test_429_raises_rate_limited_and_holds_off_the_whole_process(sim: SimulatorServer) -> None:
    source = client(sim)
    sim.inject(Fault(route="status", status=429, retry_after=0.5))
    with pytest.raises(RateLimited) as caught:
        source.get_export("e")
    assert caught.value.retry_after == pytest.approx(0.5)
    served = len(sim.requests())
    # Any other call from this process backs off too, without reaching the vendor.
    with pytest.raises(RateLimited) as again:
        source.list_files("e", cursor=None, limit=5)
    assert 0 < (again.value.retry_after or 0) <= 0.5
    assert len(sim.requests()) == served
    time.sleep(0.5)  # the vendor's requested pause, then calls go through again
    assert source.get_export("e").status == "ready"


def test_503_with_retry_after_is_a_rate_limit_without_it_transient(sim: SimulatorServer) -> None:
    source = client(sim)
    sim.inject(Fault(route="status", status=503, retry_after=0))
    with pytest.raises(RateLimited):
        source.get_export("e")
    sim.inject(Fault(route="status", status=503, times=2))
    assert source.get_export("e").status == "ready"


def test_brief_5xx_retried_in_process_then_unavailable(sim: SimulatorServer) -> None:
    source = client(sim)
    sim.inject(Fault(route="listing", status=500, times=2))
    page = source.list_files("e", cursor=None, limit=5)
    assert len(page.files) == 5
    cursor = page.next_cursor
    sim.inject(Fault(route="listing", status=502, times=3))
    with pytest.raises(UpstreamUnavailable) as caught:
        source.list_files("e", cursor=cursor, limit=5)
    assert "?" not in str(caught.value)  # never the query string (it carries the cursor)
    assert [r.status for r in sim.requests("listing")] == [500, 500, 200, 502, 502, 502]


def test_timeouts_are_transient(sim: SimulatorServer) -> None:
    source = client(sim, read_timeout=0.2, retry_attempts=2)
    sim.inject(Fault(route="status", delay_seconds=0.6, times=2))
    with pytest.raises(UpstreamUnavailable, match="Timeout"):
        source.get_export("e")


@pytest.mark.parametrize(
    ("malformed", "route", "reason"),
    [
        ("json", "status", "malformed_response"),
        ("shape", "status", "malformed_status"),
        ("json", "listing", "malformed_response"),
        ("shape", "listing", "malformed_listing"),
    ],
)
def test_malformed_bodies_are_permanent(
    sim: SimulatorServer, malformed: str, route: str, reason: str
) -> None:
    source = client(sim)
    sim.inject(Fault(route=route, malformed=malformed))  # type: ignore[arg-type]
    call = (
        (lambda: source.get_export("e"))
        if route == "status"
        else (lambda: source.list_files("e", cursor=None, limit=5))
    )
    with pytest.raises(UpstreamRejected) as caught:
        call()
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ([], "expected an object"),
        ({"name": "n", "url": "u", "format": "csv"}, "'file_id'"),
        ({"file_id": "a", "name": "n", "url": "u", "format": "csv", "size_bytes": "9"}, "size"),
        ({"file_id": "a", "name": "n", "url": "u", "format": "csv", "size_bytes": True}, "size"),
        ({"file_id": "a", "name": "n", "url": "u", "format": "csv", "sha256": 5}, "sha256"),
        ({"file_id": "a", "name": "n", "url": "u"}, "format"),
    ],
)
def test_entry_types_are_checked(entry: object, problem: str) -> None:
    # A wrongly typed entry is that entry's problem, not its page's: the handler rejects
    # it alone (invalid_listing_entry) and lists the rest.
    listed = _listed_file(entry, 3, "/v1/exports/e/files")
    assert listed.problem is not None
    assert problem in listed.problem
    assert "files[3]" in listed.problem


def test_values_are_passed_on_unchanged_for_the_handler_to_judge(sim: SimulatorServer) -> None:
    odd = FileSpec(file_id="odd", name="o", kind="bin", url="ftp://x/y", listed_sha256="XYZ")
    sim.add_export(ExportSpec(export_id="odd", files=(odd,)))
    (entry,) = client(sim).list_files("odd", cursor=None, limit=5).files
    assert (entry.url, entry.sha256, entry.compression) == ("ftp://x/y", "XYZ", "none")


def test_redirects_are_not_followed() -> None:
    hits: list[str | None] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = HttpExportSource(f"http://127.0.0.1:{server.server_address[1]}", TOKEN)
        with pytest.raises(UpstreamRejected) as caught:
            source.get_export("e")
        assert caught.value.reason == "upstream_redirect"
        assert len(hits) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_concurrent_calls_are_capped(sim: SimulatorServer) -> None:
    source = client(sim, concurrency=2)
    sim.inject(Fault(route="status", delay_seconds=0.3, times=6))
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: source.get_export("e").status, range(6)))
    assert results == ["ready"] * 6
    # 6 calls of 0.3 s, 2 at a time: at least 3 rounds.
    assert time.monotonic() - started >= 0.85


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after("99999999") == 900  # capped: 15 minutes, not hours
    assert parse_retry_after("43200") == 900
    assert parse_retry_after("inf") == 900
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = time.time()
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(120, abs=1)
