"""Per-host politeness across the jobs of one process, against a real local HTTP server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import JobReleased, RateLimited
from exportpipe.worker.download import HttpSource
from exportpipe.worker.pipeline import Pipeline
from exportpipe.worker.politeness import HostPoliteness, parse_retry_after
from exportpipe.worker.safety import AddressGuard, pinned_pool_manager
from exportpipe.worker.settings import DownloadTuning, WorkerSettings

GUARD = AddressGuard(frozenset({"localhost", "127.0.0.1"}))
BODY = b"x" * 4096


@dataclass
class Seen:
    """One request as the server saw it."""

    at: float
    host: str
    path: str


@dataclass
class HostServer:
    """Serves ``BODY`` slowly and counts concurrent requests per ``Host``.

    ``answers[path]`` is a list of ``(status, headers)`` served (and consumed) before
    that path answers 200.
    """

    port: int = 0
    hold_seconds: float = 0.5
    seen: list[Seen] = field(default_factory=list)
    answers: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _now: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}?X-Amz-Signature=secret"

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def enter(self, host: str, path: str) -> None:
        with self._lock:
            self.seen.append(Seen(time.monotonic(), host, path))
            self._now[host] = self._now.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self._now[host])

    def leave(self, host: str) -> None:
        with self._lock:
            self._now[host] -= 1


@pytest.fixture
def host_server() -> Iterator[HostServer]:
    state = HostServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            host = self.headers.get("Host", "").rsplit(":", 1)[0]
            state.enter(host, path)
            try:
                queued = state.answers.get(path)
                if queued:
                    status, headers = queued.pop(0)
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                time.sleep(state.hold_seconds)  # a download in progress
                self.wfile.write(BODY)
            finally:
                state.leave(host)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _download(url: str, politeness: HostPoliteness | None, **kw: Any) -> bytes:
    source = HttpSource(
        url,
        manager=pinned_pool_manager(GUARD),
        guard=GUARD,
        tuning=DownloadTuning(attempts=2),
        politeness=politeness,
        **kw,
    )
    try:
        out = bytearray()
        while chunk := source.read(1 << 16):
            out += chunk
        return bytes(out)
    finally:
        source.close()


def _parallel(urls: list[str], politeness: HostPoliteness | None) -> list[bytes]:
    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(lambda u: _download(u, politeness), urls))


# ------------------------------------------------------------------ concurrency


def test_without_a_cap_every_job_hits_the_host_at_once(host_server: HostServer) -> None:
    """The control: what the cap below prevents."""
    urls = [host_server.url(f"/free/{i}") for i in range(5)]
    assert _parallel(urls, None) == [BODY] * 5
    assert host_server.peak["localhost"] >= 3  # above the cap of 2 used below


def test_cap_bounds_concurrent_downloads_per_host_across_jobs(host_server: HostServer) -> None:
    politeness = HostPoliteness(max_per_host=2)
    urls = [host_server.url(f"/capped/{i}") for i in range(5)]
    urls += [host_server.url(f"/other/{i}", host="127.0.0.1") for i in range(2)]

    assert _parallel(urls, politeness) == [BODY] * 7

    assert host_server.peak["localhost"] == 2
    assert host_server.peak["127.0.0.1"] == 2  # another host has its own slots
    assert politeness.active("localhost") == 0  # every slot given back at EOF
    assert politeness.active("127.0.0.1") == 0


def test_a_job_waiting_for_a_slot_can_be_cancelled() -> None:
    politeness = HostPoliteness(max_per_host=1)
    politeness.acquire("files.example.com")
    cancel = CancelToken()
    reason = JobReleased("released while waiting for a download slot")
    threading.Timer(0.3, cancel.cancel, args=(reason,)).start()
    started = time.monotonic()
    with pytest.raises(JobReleased, match="download slot"):
        politeness.acquire("Files.Example.com.", cancel)  # same host, other spelling
    assert 0.25 < time.monotonic() - started < 2
    politeness.release("files.example.com")
    politeness.acquire("files.example.com")  # free again


# ------------------------------------------------------------------------ pauses


def test_429_with_retry_after_slows_the_host_for_every_job(host_server: HostServer) -> None:
    politeness = HostPoliteness(max_per_host=8)
    host_server.hold_seconds = 0.0
    host_server.answers["/limited"] = [(429, {"Retry-After": "2"})]

    with pytest.raises(RateLimited) as info:
        _download(host_server.url("/limited"), politeness)
    assert info.value.retry_after == 2.0
    refused_at = host_server.requests("/limited")[0].at
    assert politeness.active("localhost") == 0  # the refused job gave its slot back

    # Another job for the same host, started at once, waits out the pause before asking.
    other_host = _download(host_server.url("/elsewhere", host="127.0.0.1"), politeness)
    assert _download(host_server.url("/next"), politeness) == BODY
    assert other_host == BODY
    (asked,) = host_server.requests("/next")
    assert asked.at - refused_at >= 1.9
    (unaffected,) = host_server.requests("/elsewhere")
    assert unaffected.at - refused_at < 1.5  # 127.0.0.1 was never paused
    assert politeness.pauses == 1


def test_long_pause_releases_jobs_without_contacting_the_host(host_server: HostServer) -> None:
    politeness = HostPoliteness(max_per_host=8, inline_wait_seconds=5)
    host_server.answers["/busy"] = [(503, {"Retry-After": "120"})]

    with pytest.raises(RateLimited):
        _download(host_server.url("/busy"), politeness)
    with pytest.raises(RateLimited) as info:
        _download(host_server.url("/queued"), politeness)

    assert info.value.reason == "host_paused"
    assert info.value.retry_after is not None
    assert 115 <= info.value.retry_after <= 120
    assert "secret" not in str(info.value)
    assert host_server.requests("/queued") == []  # the paused host was not asked
    assert politeness.active("localhost") == 0


def test_503_without_retry_after_is_an_outage_not_a_pause(host_server: HostServer) -> None:
    politeness = HostPoliteness(max_per_host=8)
    host_server.hold_seconds = 0.0
    host_server.answers["/flaky"] = [(503, {})]

    assert _download(host_server.url("/flaky"), politeness, max_wait_seconds=0.1) == BODY
    assert len(host_server.requests("/flaky")) == 2  # retried by the download itself
    assert politeness.paused_for("localhost") == 0
    assert politeness.pauses == 0


def test_pauses_are_clamped_and_a_bare_429_gets_the_default() -> None:
    now = [100.0]
    politeness = HostPoliteness(
        max_per_host=1, max_pause_seconds=900, default_pause_seconds=5, clock=lambda: now[0]
    )
    assert politeness.note_response("a.example", 429, {}) == 5
    assert politeness.note_response("b.example", 429, {"Retry-After": "86400"}) == 900
    assert politeness.note_response("c.example", 500, {"Retry-After": "60"}) == 0
    # A shorter pause never shortens a longer one already in force.
    assert politeness.note_response("b.example", 503, {"Retry-After": "1"}) == 1
    assert politeness.paused_for("b.example") == 900
    now[0] += 900
    assert politeness.paused_for("b.example") == 0


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7
    assert parse_retry_after(" 1.5 ") == 1.5
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(later, now=now) == 90
    assert parse_retry_after(earlier, now=now) == 0
    assert parse_retry_after("-3") == 0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad) is None


def test_pipeline_shares_one_politeness_from_the_setting(settings: WorkerSettings) -> None:
    assert WorkerSettings.model_fields["max_downloads_per_host"].default == 16
    tuned = WorkerSettings(**{**settings.model_dump(), "max_downloads_per_host": 3})
    pipeline = Pipeline(tuned, s3=None)
    assert pipeline.politeness.max_per_host == 3


def test_retry_after_as_an_http_date_reaches_the_job(host_server: HostServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    host_server.answers["/dated"] = [(429, {"Retry-After": when})]
    with pytest.raises(RateLimited) as info:
        _download(host_server.url("/dated"), HostPoliteness(max_per_host=2))
    assert info.value.retry_after is not None
    assert 55 <= info.value.retry_after <= 61
