"""The Export API simulator: reference contract v1 over real HTTP, plus the file bytes.

Routes: the contract's ``GET /v1/exports/{export_id}`` and ``.../files`` (bearer token),
the file bytes at ``GET|HEAD /files/{export_id}/{file_id}/{name}?sig=...`` (signature
only, like a presigned URL; ``Range`` and ``If-Range`` honoured) and ``/_sim/...``
control routes for tests in other processes. docs/export-api.md describes each
(*Endpoints*; *The simulator*, which also shows it used in-process).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from exportpipe.tools.simulator.content import ContentCache, FileContent
from exportpipe.tools.simulator.spec import ExportSpec, Fault, FileSpec

__all__ = ["DEFAULT_TOKEN", "RequestRecord", "SimulatorServer"]

_EXPORT_RE = re.compile(r"^/v1/exports/([^/]+)(/files)?$")  # status, or with /files listing
_FILE_RE = re.compile(r"^/files/([^/]+)/([^/]+)/([^/]+)$")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MAX_LIMIT = 100_000
DEFAULT_TOKEN = "simulator-token"  # noqa: S105 - a local test server's well-known token
_WRITE_CHUNK = 64 * 1024
_FAULTS = TypeAdapter(Fault | list[Fault])
_SECRET = b"exportpipe-simulator"  # signs cursors and file URLs; fixed: URLs are deterministic


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator answered (query strings are never recorded)."""

    method: str
    route: str
    path: str
    status: int
    export_id: str | None = None
    file_id: str | None = None
    range: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _ExportState:
    spec: ExportSpec
    polls: int = 0
    first_seen: float | None = None
    rng: random.Random = field(default_factory=random.Random)
    downloads: dict[str, int] = field(default_factory=dict)


class _Respond(Exception):
    """Short-circuit a request with a JSON error response."""

    def __init__(self, status: int, error: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or {}


class SimulatorServer:
    """A contract-v1 Export API on ``127.0.0.1`` in a background thread.

    Args:
        exports: the exports to serve (more can be added with :meth:`add_export`).
        token: the bearer token API routes require (``None``: no auth).
        host / port: where to listen (port 0: a free port).
        files_base_url: base of the file URLs in listings (default: this server's own
            URL); pointing it at another name for this host (``http://localhost:PORT``)
            makes the files look like they live on another host.
    """

    def __init__(
        self,
        exports: Iterable[ExportSpec] = (),
        *,
        token: str | None = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        files_base_url: str | None = None,
    ) -> None:
        self.token = token
        self._lock = threading.Lock()
        self._exports: dict[str, _ExportState] = {}
        self._faults: list[list[Any]] = []  # [fault, remaining]
        self._log: deque[RequestRecord] = deque(maxlen=200_000)
        self.cache = ContentCache()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.sim = self
        self.url = f"http://{host}:{self.port}"
        self.files_base_url = (files_base_url or self.url).rstrip("/")
        self._thread: threading.Thread | None = None
        self._foreground = False
        for spec in exports:
            self.add_export(spec)

    # -------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    def start(self) -> SimulatorServer:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="export-api-simulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another one."""
        self._foreground = True
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._foreground = False

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None or self._foreground:
            self._httpd.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- control

    def add_export(self, spec: ExportSpec) -> None:
        """Serve ``spec`` (replacing an export with the same id, state reset)."""
        state = _ExportState(spec=spec, rng=random.Random(spec.faults.seed))  # noqa: S311
        with self._lock:
            self._exports[spec.export_id] = state
        for fault in spec.scripted:
            self.inject(fault.model_copy(update={"export_id": fault.export_id or spec.export_id}))

    def inject(self, *faults: Fault) -> None:
        """Apply each fault to the next ``fault.times`` matching requests, in order."""
        with self._lock:
            self._faults.extend([f, f.times] for f in faults)

    def requests(self, route: str | None = None) -> list[RequestRecord]:
        """Requests answered so far (optionally only one route's), oldest first."""
        with self._lock:
            return [r for r in self._log if route is None or r.route == route]

    def content(self, export_id: str, file_id: str) -> FileContent:
        """The bytes (and expected content) of one served file."""
        with self._lock:
            spec = self._exports[export_id].spec.find(file_id)
        if spec is None:
            raise KeyError(file_id)
        return self.cache.get(export_id, spec)

    def file_url(self, export_id: str, spec: FileSpec) -> str:
        """The URL listed for ``spec`` (its own override, else this server's)."""
        if spec.url is not None:
            return spec.url
        path = f"/files/{quote(export_id, safe='')}/{quote(spec.file_id, safe='')}/"
        path += quote(spec.name.rsplit("/", 1)[-1], safe="")
        return f"{self.files_base_url}{path}?sig={self._sign(export_id, spec.file_id)}"

    # ---------------------------------------------------------------- helpers

    def _sign(self, *parts: str) -> str:
        mac = hmac.new(_SECRET, "\x00".join(parts).encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def _cursor(self, export_id: str, offset: int, page: int) -> str:
        payload = base64.urlsafe_b64encode(f"{offset}:{page}".encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(export_id, payload)[:16]}"

    def _parse_cursor(self, export_id: str, cursor: str) -> tuple[int, int]:
        payload, _, sig = cursor.partition(".")
        if not hmac.compare_digest(sig, self._sign(export_id, payload)[:16]):
            raise _Respond(400, "invalid_cursor")
        try:
            text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
            offset, page = (int(x) for x in text.split(":"))
        except (ValueError, UnicodeDecodeError):
            raise _Respond(400, "invalid_cursor") from None
        return offset, page

    def _take_fault(self, route: str, export_id: str | None, file_id: str | None) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault: Fault = entry[0]
                if fault.route not in ("any", route):
                    continue
                if fault.export_id is not None and fault.export_id != export_id:
                    continue
                if fault.file_id is not None and fault.file_id != file_id:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    self._faults.remove(entry)
                return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _poll(self, export_id: str) -> tuple[_ExportState, str]:
        """The export and its status now; each call during the pending phase counts a poll."""
        with self._lock:
            state = self._exports.get(export_id)
            if state is None:
                raise _Respond(404, "export_not_found")
            if state.spec.forbidden:
                raise _Respond(403, "forbidden")
            spec = state.spec
            now = time.monotonic()
            if state.first_seen is None:
                state.first_seen = now
            pending = state.polls < spec.pending_polls or (
                now - state.first_seen < spec.pending_seconds
            )
            if pending:
                state.polls += 1
                half = max(1, spec.pending_polls // 2)
                return state, "pending" if state.polls <= half else "running"
        return state, spec.final_status

    def _random_fault(self, state: _ExportState, route: str) -> Fault | None:
        faults = state.spec.faults
        with self._lock:
            roll = state.rng.random()
        if route == "download":
            if roll < faults.download_error_rate:
                return Fault(status=503, retry_after=faults.retry_after_seconds)
            if roll < faults.download_error_rate + faults.truncate_rate:
                return Fault(truncate_at=-1)  # -1: half of the body
            return None
        if roll < faults.rate_limit_rate:
            return Fault(status=429, retry_after=faults.retry_after_seconds)
        if roll < faults.rate_limit_rate + faults.api_error_rate:
            return Fault(status=faults.api_error_status)
        return None

    # ------------------------------------------------------------------ routes

    def _handle_status(self, h: _Handler, export_id: str) -> None:
        state, status = self._poll(export_id)
        spec = state.spec
        count = spec.count if (spec.report_file_count and status == "ready") else None
        h.send_json(200, {"export_id": export_id, "status": status, "file_count": count})

    def _handle_listing(self, h: _Handler, export_id: str, query: dict[str, list[str]]) -> None:
        state, status = self._poll(export_id)
        if status != "ready":
            h.send_json(409, {"error": "export_not_ready", "status": status})
            return
        spec = state.spec
        limit_text = query.get("limit", [str(spec.page_size)])[0]
        try:
            limit = int(limit_text)
        except ValueError:
            raise _Respond(400, "invalid_limit") from None
        if not 1 <= limit <= _MAX_LIMIT:
            raise _Respond(400, "invalid_limit")
        limit = min(limit, spec.page_size)
        cursor = query.get("cursor", [""])[0]
        offset, page = self._parse_cursor(export_id, cursor) if cursor else (0, 0)
        if page in spec.empty_pages:
            next_cursor: str | None = self._cursor(export_id, offset, page + 1)
            h.send_json(200, {"files": [], "next_cursor": next_cursor})
            return
        end = min(offset + limit, spec.count)
        files = [self._file_entry(export_id, spec.file(i)) for i in range(offset, end)]
        next_cursor = self._cursor(export_id, end, page + 1) if end < spec.count else None
        h.send_json(200, {"files": files, "next_cursor": next_cursor})

    def _file_entry(self, export_id: str, spec: FileSpec) -> dict[str, Any]:
        size, sha = self.cache.meta(export_id, spec)
        info = spec.info
        return {
            "file_id": spec.file_id,
            "name": spec.name,
            "url": self.file_url(export_id, spec),
            "size_bytes": size if spec.declare_size else None,
            "sha256": spec.listed_sha256 or (sha if spec.declare_sha256 else None),
            "compression": info.compression if spec.declare_compression else None,
            "format": info.format,
        }

    def _handle_download(
        self,
        h: _Handler,
        export_id: str,
        file_id: str,
        query: dict[str, list[str]],
        fault: Fault | None,
    ) -> None:
        with self._lock:
            state = self._exports.get(export_id)
        spec = state.spec.find(file_id) if state is not None else None
        if state is None or spec is None:
            raise _Respond(404, "file_not_found")
        if not hmac.compare_digest(query.get("sig", [""])[0], self._sign(export_id, file_id)):
            raise _Respond(403, "signature_invalid")
        content = self.cache.get(export_id, spec)
        raw = content.raw
        etag = f'"{content.sha256[:32]}"'
        start, end = 0, len(raw)
        status = 200
        range_header = h.headers.get("Range")
        if range_header and h.headers.get("If-Range") in (None, etag):
            parsed = _parse_range(range_header, len(raw))
            if parsed == "unsatisfiable":
                raise _Respond(
                    416, "range_not_satisfiable", headers={"Content-Range": f"bytes */{len(raw)}"}
                )
            if parsed is not None:
                (start, end), status = parsed, 206
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": etag,
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(raw)}"
        cut: int | None = None
        if h.command == "GET":
            with self._lock:
                seen = state.downloads.get(file_id, 0)
                state.downloads[file_id] = seen + 1
            if seen < spec.truncate_times:
                cut = (end - start) // 2
            elif fault is not None and fault.truncate_at is not None:
                cut = (end - start) // 2 if fault.truncate_at < 0 else fault.truncate_at
        h.send_bytes(
            status,
            raw,
            start,
            end,
            headers,
            cut=cut,
            rate=state.spec.faults.download_bytes_per_second,
        )

    def dispatch(self, h: _Handler) -> None:
        """Route one request (called by the handler thread)."""
        parts = urlsplit(h.path)
        path = parts.path
        query = parse_qs(parts.query)
        route, export_id, file_id = "other", None, None
        if match := _FILE_RE.match(path):
            route, export_id, file_id = "download", unquote(match[1]), unquote(match[2])
        elif match := _EXPORT_RE.match(path):
            route, export_id = "listing" if match[2] else "status", unquote(match[1])
        elif path.startswith("/_sim/"):
            route = "control"
        h.record_route(route, export_id, file_id)
        try:
            if route in ("status", "listing", "control"):
                self._check_auth(h)
            if route == "control":
                self._handle_control(h, path)
                return
            if route == "other":
                raise _Respond(404, "not_found")
            if h.command not in ("GET", "HEAD") or (h.command == "HEAD" and route != "download"):
                raise _Respond(405, "method_not_allowed")
            fault = self._take_fault(route, export_id, file_id)
            if fault is None and export_id is not None:
                with self._lock:
                    state = self._exports.get(export_id)
                if state is not None:
                    fault = self._random_fault(state, route)
                    if state.spec.faults.slow_seconds:
                        time.sleep(state.spec.faults.slow_seconds)
            if fault is not None:
                if fault.delay_seconds:
                    time.sleep(fault.delay_seconds)
                if fault.status is not None:
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = _retry_after_text(fault.retry_after)
                    raise _Respond(fault.status, "injected_fault", headers=headers)
                if fault.malformed == "json":
                    h.send_raw(200, b'{"files": [{"file_id": "f0", "name": ', "application/json")
                    return
                if fault.malformed == "shape":
                    h.send_json(200, {"items": "not-a-listing", "export_id": 42})
                    return
            assert export_id is not None  # noqa: S101 - every remaining route carries one
            if route == "status":
                self._handle_status(h, export_id)
            elif route == "listing":
                self._handle_listing(h, export_id, query)
            else:
                assert file_id is not None  # noqa: S101
                self._handle_download(h, export_id, file_id, query, fault)
        except _Respond as r:
            h.send_json(r.status, {"error": r.error}, headers=r.headers)

    def _check_auth(self, h: _Handler) -> None:
        if self.token is None:
            return
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(h.headers.get("Authorization", ""), expected):
            raise _Respond(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})

    def _handle_control(self, h: _Handler, path: str) -> None:
        if path == "/_sim/health" and h.command == "GET":
            h.send_json(200, {"ok": True, "exports": len(self._exports)})
        elif path == "/_sim/requests" and h.command == "GET":
            h.send_json(200, {"requests": [r.__dict__ for r in self.requests()]})
        elif path == "/_sim/exports" and h.command == "POST":
            try:
                spec = ExportSpec.model_validate_json(h.read_body())
            except ValidationError as exc:
                raise _Respond(400, f"invalid export spec: {exc.error_count()} error(s)") from None
            self.add_export(spec)
            h.send_json(201, {"export_id": spec.export_id, "file_count": spec.count})
        elif path == "/_sim/faults" and h.command == "POST":
            try:
                parsed = _FAULTS.validate_json(h.read_body())
            except ValidationError as exc:
                raise _Respond(400, f"invalid fault: {exc.error_count()} error(s)") from None
            faults = parsed if isinstance(parsed, list) else [parsed]
            self.inject(*faults)
            h.send_json(201, {"injected": len(faults)})
        else:
            raise _Respond(404, "not_found")


def _retry_after_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``(start, end_exclusive)`` of a single ``bytes=`` range.

    Returns ``None`` for a header this server does not handle (several ranges, other
    units), which RFC 9110 allows treating as absent (the whole body, 200), and
    ``"unsatisfiable"`` for a range outside the body (416).
    """
    match = _RANGE_RE.match(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return "unsatisfiable"
    return (start, end)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    sim: SimulatorServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a client's connection pool expects
    # Headers and body are separate writes: without TCP_NODELAY a small body waits for
    # the client's delayed ACK (~40 ms per response on Linux).
    disable_nagle_algorithm = True
    server: _HTTPServer
    server_version = "ExportApiSimulator/1"

    _route = "other"
    _export_id: str | None = None
    _file_id: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (it would print presigned query strings)."""

    def record_route(self, route: str, export_id: str | None, file_id: str | None) -> None:
        self._route, self._export_id, self._file_id = route, export_id, file_id

    def _record(self, status: int) -> None:
        self.server.sim._record(
            RequestRecord(
                method=self.command,
                route=self._route,
                path=urlsplit(self.path).path,
                status=status,
                export_id=self._export_id,
                file_id=self._file_id,
                range=self.headers.get("Range"),
            )
        )

    def _dispatch(self) -> None:
        self.server.sim.dispatch(self)

    do_GET = do_HEAD = do_POST = _dispatch

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_raw(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        headers = {"Content-Type": content_type, **(headers or {})}
        self.send_bytes(status, body, 0, len(body), headers, cut=None, rate=None)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_raw(status, body, "application/json", headers)

    def send_bytes(
        self,
        status: int,
        raw: bytes,
        start: int,
        end: int,
        headers: dict[str, str],
        *,
        cut: int | None,
        rate: int | None,
    ) -> None:
        self._record(status)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if self.command == "HEAD":
            return
        stop = end if cut is None else min(end, start + cut)
        view = memoryview(raw)
        pos = start
        started = time.monotonic()
        try:
            while pos < stop:
                n = min(_WRITE_CHUNK, stop - pos)
                self.wfile.write(view[pos : pos + n])
                pos += n
                if rate:
                    ahead = (pos - start) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if cut is not None:
            # Promised more than was sent: drop the connection, as a flaky network does.
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
