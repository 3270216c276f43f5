from __future__ import annotations

import hashlib
import os
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import (
    ExportPipeError,
    IntegrityError,
    JobDeadlineExceeded,
    RateLimited,
    UnsafeSource,
    UpstreamRejected,
    UpstreamUnavailable,
)
from exportpipe.worker.download import MAX_STALLED_RESUMES, HttpSource, Prefetcher, open_source
from exportpipe.worker.safety import AddressGuard, pinned_pool_manager
from exportpipe.worker.settings import DownloadTuning

GUARD = AddressGuard(frozenset({"localhost"}))
BODY = os.urandom(3 * 1024 * 1024 + 17)


def _source(url: str, guard: AddressGuard = GUARD, **kw: Any) -> HttpSource:
    kw.setdefault("tuning", DownloadTuning(attempts=3))
    return HttpSource(url, manager=pinned_pool_manager(guard), guard=guard, **kw)


def _read_all(source: Any) -> bytes:
    out = bytearray()
    while chunk := source.read(256 * 1024):
        out += chunk
    return bytes(out)


def _checks(body: bytes) -> dict[str, Any]:
    return {"expected_size": len(body), "expected_sha256": hashlib.sha256(body).hexdigest()}


def test_streams_and_verifies(file_server: Any) -> None:
    url = file_server.add(BODY)
    source = _source(url, **_checks(BODY))
    assert _read_all(source) == BODY
    assert source.read() == b""  # verified at EOF, and stays there
    assert source.bytes_read == len(BODY)
    assert source.sha256 == hashlib.sha256(BODY).hexdigest()
    (headers,) = file_server.requests_for(url)
    assert headers["Accept-Encoding"] == "identity"


def test_sha256_mismatch_fails_at_eof(file_server: Any) -> None:
    url = file_server.add(BODY)
    source = _source(url, expected_size=len(BODY), expected_sha256="0" * 64)
    with pytest.raises(IntegrityError) as info:
        _read_all(source)
    assert info.value.reason == "sha256_mismatch"
    assert "secret-token" not in str(info.value)


def test_size_mismatch_fails_before_reading(file_server: Any) -> None:
    url = file_server.add(BODY)
    source = _source(url, expected_size=len(BODY) + 1)
    with pytest.raises(IntegrityError) as info:
        source.read(10)
    assert info.value.reason == "size_mismatch"


def test_truncated_download_resumes_with_range(file_server: Any) -> None:
    url = file_server.add(BODY, truncate_at=1024 * 1024 + 5, truncations=2)
    source = _source(url, **_checks(BODY))
    assert _read_all(source) == BODY
    requests = file_server.requests_for(url)
    assert len(requests) == 3
    assert "Range" not in requests[0]
    assert requests[1]["Range"].startswith("bytes=")
    assert requests[1]["If-Range"] == '"' + hashlib.md5(BODY).hexdigest() + '"'  # noqa: S324
    assert source.resumed == 2


def test_resume_without_range_support_skips_what_it_has(file_server: Any) -> None:
    url = file_server.add(BODY, truncate_at=2 * 1024 * 1024, ranges=False)
    source = _source(url, **_checks(BODY))
    assert _read_all(source) == BODY
    assert len(file_server.requests_for(url)) == 2


def test_persistent_truncation_gives_up_transiently(file_server: Any) -> None:
    url = file_server.add(BODY, truncate_at=100, truncations=10_000, ranges=False)
    with pytest.raises(UpstreamUnavailable):
        _read_all(_source(url, **_checks(BODY)))


def test_redirect_within_allowed_hosts_is_followed(file_server: Any) -> None:
    target = file_server.add(BODY)
    url = file_server.add(redirect=target)
    assert _read_all(_source(url, **_checks(BODY))) == BODY


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/x",
        "http://[::ffff:127.0.0.1]:{port}/x",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
def test_redirect_out_of_allowed_hosts_is_refused(file_server: Any, target: str) -> None:
    url = file_server.add(redirect=target.format(port=file_server.port))
    with pytest.raises(UnsafeSource):
        _read_all(_source(url))


def test_redirect_to_metadata_refused_even_when_allow_listed(file_server: Any) -> None:
    guard = AddressGuard(frozenset({"localhost", "169.254.169.254", "169.254.170.2"}))
    for target in ("http://169.254.169.254/latest/", "http://169.254.170.2/v2/credentials"):
        url = file_server.add(redirect=target)
        with pytest.raises(UnsafeSource) as info:
            _read_all(_source(url, guard))
        assert info.value.reason == "unsafe_address"
        assert "link-local" in info.value.message


def test_loopback_refused_without_allow_list(file_server: Any) -> None:
    url = file_server.url("/anything", host="127.0.0.1")
    with pytest.raises(UnsafeSource) as info:
        _read_all(_source(url, AddressGuard()))
    assert info.value.reason == "unsafe_address"


def test_too_many_redirects(file_server: Any) -> None:
    url = file_server.add(BODY)
    for _ in range(4):
        url = file_server.add(redirect=url)
    with pytest.raises(UnsafeSource) as info:
        _read_all(_source(url))
    assert info.value.reason == "too_many_redirects"


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [(404, UpstreamRejected, "http_404"), (403, UpstreamRejected, "http_403")],
)
def test_client_errors_are_permanent(
    file_server: Any, status: int, error: type, reason: str
) -> None:
    url = file_server.add(status=status)
    with pytest.raises(error) as info:
        _read_all(_source(url))
    assert info.value.reason == reason
    assert len(file_server.requests_for(url)) == 1


def test_server_errors_are_retried_then_transient(file_server: Any) -> None:
    url = file_server.add(status=502)
    with pytest.raises(UpstreamUnavailable):
        _read_all(_source(url, tuning=DownloadTuning(attempts=2)))
    assert len(file_server.requests_for(url)) == 2


def test_rate_limit_carries_retry_after(file_server: Any) -> None:
    url = file_server.add(status=429, headers={"Retry-After": "42"})
    with pytest.raises(RateLimited) as info:
        _read_all(_source(url))
    assert info.value.retry_after == 42.0


def test_prefetcher_passes_bytes_and_errors(file_server: Any) -> None:
    url = file_server.add(BODY)
    prefetch = Prefetcher(_source(url, **_checks(BODY)), chunk_size=100_000, depth=2)
    assert _read_all(prefetch) == BODY
    prefetch.close()
    bad = Prefetcher(
        _source(url, expected_size=len(BODY), expected_sha256="1" * 64), chunk_size=65536, depth=2
    )
    with pytest.raises(IntegrityError):
        _read_all(bad)
    bad.close()


def test_s3_source_is_verified(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="vendor/file.bin", Body=BODY)
    source = open_source(
        f"s3://{bucket}/vendor/file.bin",
        manager=pinned_pool_manager(GUARD),
        guard=GUARD,
        s3_client_factory=lambda: s3,
        **_checks(BODY),
    )
    assert _read_all(source) == BODY
    wrong = open_source(
        f"s3://{bucket}/vendor/file.bin",
        manager=pinned_pool_manager(GUARD),
        guard=GUARD,
        s3_client_factory=lambda: s3,
        expected_size=len(BODY),
        expected_sha256="2" * 64,
    )
    with pytest.raises(IntegrityError):
        _read_all(wrong)


# -- hostile servers ----------------------------------------------------------------

PAYLOAD = os.urandom(200_000)


def _read_bounded(source: Any, server: Any, timeout: float = 30.0) -> BaseException | bytes:
    """Read ``source`` to the end in a thread; fail the test if it has not ended in time.

    On a timeout the server is closed first, so a client looping on it meets refused
    connections and stops: the test fails instead of hanging.
    """
    outcome: list[BaseException | bytes] = []

    def run() -> None:
        try:
            outcome.append(_read_all(source))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        served = server.requests
        server.close()
        thread.join(60)
        raise AssertionError(f"the download had not ended after {timeout} s, {served} requests")
    source.close()
    source._manager.clear()  # close pooled sockets now, not at garbage collection
    return outcome[0]


def _cut_first_answer(handler: BaseHTTPRequestHandler) -> bool:
    """Answer a request without ``Range`` with 200, the full length promised and 1,000
    bytes sent, then drop the connection. True if it answered."""
    if handler.headers.get("Range"):
        return False
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(PAYLOAD)))
    handler.send_header("ETag", '"v1"')
    handler.end_headers()
    handler.wfile.write(PAYLOAD[:1000])
    handler.close_connection = True
    return True


def _empty_206(*, promise_rest: bool) -> Any:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        if _cut_first_answer(handler):
            return
        start = int(handler.headers["Range"].removeprefix("bytes=").rstrip("-"))
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        handler.send_header("Content-Length", str(len(PAYLOAD) - start) if promise_rest else "0")
        handler.send_header("ETag", '"v1"')
        handler.end_headers()
        handler.close_connection = True

    return respond


@pytest.mark.parametrize("promise_rest", [False, True], ids=["length-0", "length-promised"])
def test_resumes_answered_with_empty_206_are_bounded(
    hostile_server: Any, promise_rest: bool
) -> None:
    server = hostile_server(_empty_206(promise_rest=promise_rest))
    source = _source(server.url, expected_size=len(PAYLOAD))
    outcome = _read_bounded(source, server)
    assert isinstance(outcome, UpstreamUnavailable), outcome
    assert outcome.reason == "download_stalled"
    assert "secret-token" not in outcome.message
    # The first request, then one per resume that made no progress.
    assert server.requests == 1 + MAX_STALLED_RESUMES


def test_cancel_wakes_a_download_backing_off_between_resumes(hostile_server: Any) -> None:
    server = hostile_server(_empty_206(promise_rest=False))
    token = CancelToken()
    source = _source(server.url, expected_size=len(PAYLOAD), cancel=token)
    # The second stalled resume backs off 1 s; the deadline lands inside that wait.
    threading.Timer(0.7, token.cancel, args=(JobDeadlineExceeded("too long"),)).start()
    outcome = _read_bounded(source, server, timeout=5)
    assert isinstance(outcome, JobDeadlineExceeded), outcome
    assert server.requests < 1 + MAX_STALLED_RESUMES


def _header_answer(headers: dict[str, str], status: int = 200) -> Any:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if status == 200:
            handler.wfile.write(b"x" * 56)
        handler.close_connection = True

    return respond


@pytest.mark.parametrize(
    ("headers", "status", "error", "reason"),
    [
        ({"Content-Length": "abc"}, 200, UpstreamRejected, "bad_content_length"),
        ({"Content-Length": "56, 56"}, 200, UpstreamRejected, "bad_content_length"),
        ({"Content-Length": "-56"}, 200, UpstreamRejected, "bad_content_length"),
        ({"Location": "http://localhost:99999/x", "Content-Length": "0"}, 302, UnsafeSource, None),
        ({"Location": "http://[::1/x", "Content-Length": "0"}, 302, UnsafeSource, None),
        ({"Retry-After": "nan", "Content-Length": "0"}, 429, RateLimited, "rate_limited"),
        ({"Retry-After": "inf", "Content-Length": "0"}, 429, RateLimited, "rate_limited"),
    ],
    ids=["length-abc", "length-twice", "length-negative", "port-99999", "bad-ipv6", "nan", "inf"],
)
def test_hostile_protocol_values_are_classified(
    hostile_server: Any,
    headers: dict[str, str],
    status: int,
    error: type[ExportPipeError],
    reason: str | None,
) -> None:
    server = hostile_server(_header_answer(headers, status))
    outcome = _read_bounded(_source(server.url), server)
    assert isinstance(outcome, error), repr(outcome)
    if reason is not None:
        assert outcome.reason == reason
    if isinstance(outcome, RateLimited):
        # Not a delay: the runtime falls back to its own backoff.
        assert outcome.retry_after is None
    assert "secret-token" not in str(outcome)


def test_a_closed_prefetcher_leaves_no_thread_behind(hostile_server: Any) -> None:
    server = hostile_server(_empty_206(promise_rest=False))
    before = {t for t in threading.enumerate() if t.name != "hostile-server"}
    prefetch = Prefetcher(_source(server.url, expected_size=len(PAYLOAD)), chunk_size=500, depth=1)
    assert prefetch.read(500) == PAYLOAD[:500]
    prefetch.close()  # the reader gave up; the download thread is mid-resume
    after = {t for t in threading.enumerate() if t.name != "hostile-server"}
    assert after - before == set()
