"""Worker test fixtures: a real-socket HTTP file server and job/settings factories.

The moto server (``moto_server``, ``s3``, ``bucket``, ``sqs``, ``queue_pair``) comes
from the repository's root ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from exportpipe.common.schemas import DownloadJob, S3Destination, job_id_for
from exportpipe.worker.settings import WorkerSettings

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Served:
    """One file the server serves, with fault knobs.

    Attributes:
        body: the bytes.
        truncate_at: the first ``truncations`` full/partial responses stop after this
            many bytes of body and drop the connection (Content-Length promises more).
        ranges: honour ``Range`` requests.
        redirect: answer 302 with this Location instead.
        status: answer this status (no body) instead.
        headers: extra response headers.
        bytes_per_second: throttle the body (0 = unthrottled).
    """

    body: bytes = b""
    truncate_at: int | None = None
    truncations: int = 1
    ranges: bool = True
    redirect: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    bytes_per_second: int = 0
    etag: str = ""

    def __post_init__(self) -> None:
        self.etag = '"' + hashlib.md5(self.body).hexdigest() + '"'  # noqa: S324


class FileServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving :class:`Served` files."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append((self.path, dict(self.headers.items())))
                served = server.files.get(path)
                if served is None:
                    self._empty(404)
                    return
                if served.redirect is not None:
                    self._empty(302, {"Location": served.redirect})
                    return
                if served.status is not None:
                    self._empty(served.status, served.headers)
                    return
                start = 0
                match = _RANGE.match(self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if served.ranges and match and (if_range in (None, served.etag)):
                    start = int(match.group(1))
                body = served.body
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                    if served.ranges:
                        self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", served.etag)
                for key, value in served.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                payload = memoryview(body)[start:]
                if served.truncate_at is not None and served.truncations > 0:
                    served.truncations -= 1
                    payload = payload[: max(0, served.truncate_at - start)]
                    self.close_connection = True
                step = 64 * 1024
                for i in range(0, len(payload), step):
                    try:
                        self.wfile.write(payload[i : i + step])
                    except OSError:
                        return
                    if served.bytes_per_second:
                        time.sleep(step / served.bytes_per_second)

            def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, body: bytes = b"", *, name: str | None = None, **knobs: Any) -> str:
        """Serve ``body`` (with knobs) under a fresh path; return its URL."""
        path = f"/{uuid.uuid4().hex}/{name or 'file'}"
        self.files[path] = Served(body=body, **knobs)
        return self.url(path)

    def url(self, path: str, *, host: str = "localhost") -> str:
        """The URL of ``path`` on this server through ``host``."""
        return f"http://{host}:{self.port}{path}?X-Amz-Signature=secret-token"

    def requests_for(self, url: str) -> list[dict[str, str]]:
        """Headers of every request made for ``url``'s path."""
        path = url.split(f":{self.port}", 1)[1].split("?", 1)[0]
        return [h for p, h in self.requests if p.split("?", 1)[0] == path]

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture(scope="session")
def file_server() -> Iterator[FileServer]:
    """A real-socket HTTP file server on 127.0.0.1 (reach it as ``localhost``)."""
    server = FileServer()
    yield server
    server.close()


class _Chunks:
    """Reads of random sizes (1 byte to 70 kB), as a network stream gives them."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._fh = io.BytesIO(data)
        self._rng = random.Random(seed)

    def read(self, size: int = -1, /) -> bytes:
        return self._fh.read(self._rng.randint(1, 70_000))


@pytest.fixture
def chunked() -> Callable[[bytes, int], Any]:
    """A stream of ``data`` read in random-size pieces (seeded)."""
    return _Chunks


@pytest.fixture
def settings(bucket: str, tmp_path: Path) -> WorkerSettings:
    """Worker settings for tests: small parts, downloads allowed from ``localhost`` only."""
    return WorkerSettings(
        bucket=bucket,
        jobs_queue_url="http://unused",
        jobs_dlq_url="http://unused-dlq",
        download_allowed_hosts=frozenset({"localhost"}),
        part_size_bytes=5 * 1024 * 1024,
        upload_parts_in_flight=2,
        download_attempts=3,
        spool_dir=tmp_path,
        ratio_check_after_bytes=4 * 1024 * 1024,
        max_compression_ratio=100.0,
    )


JobFactory = Callable[..., DownloadJob]


@pytest.fixture
def make_job(bucket: str) -> JobFactory:
    """Build a ``DownloadJob`` into ``bucket`` (sha256/size from ``body`` when given)."""

    def make(
        url: str,
        *,
        body: bytes | None = None,
        file_name: str = "part-0001.jsonl.gz",
        compression: str | None = "gzip",
        fmt: str = "jsonl",
        export_id: str | None = None,
        file_id: str = "file-1",
        **overrides: Any,
    ) -> DownloadJob:
        export_id = export_id or f"exp-{uuid.uuid4().hex[:8]}"
        fields: dict[str, Any] = {
            "job_id": job_id_for(export_id, file_id),
            "export_id": export_id,
            "file_id": file_id,
            "file_name": file_name,
            "url": url,
            "compression": compression,
            "format": fmt,
            "destination": S3Destination(bucket=bucket, prefix=f"exports/{export_id}/"),
        }
        if body is not None:
            fields["size_bytes"] = len(body)
            fields["sha256"] = hashlib.sha256(body).hexdigest()
        fields.update(overrides)
        return DownloadJob.model_validate(fields)

    return make


class FakeAgent:
    """The ECS agent's task-protection endpoint, on a real socket."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = False
        self.changed = threading.Condition()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with agent.changed:
                    agent.calls.append({"path": self.path, **body})
                    agent.changed.notify_all()
                reply = (
                    {"failure": {"Reason": "boom"}}
                    if agent.fail
                    else {"protection": {"ProtectionEnabled": body["ProtectionEnabled"]}}
                )
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.calls) < count and time.monotonic() < deadline:
                self.changed.wait(timeout=0.1)
            return list(self.calls)


@pytest.fixture
def ecs_agent() -> Iterator[FakeAgent]:
    """A fake ECS agent task-protection endpoint (``.uri`` is the ``ECS_AGENT_URI``)."""
    fake = FakeAgent()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


Respond = Callable[[BaseHTTPRequestHandler], None]


class HostileServer:
    """A real-socket HTTP server whose every answer is written by a test's function.

    Its handler threads are named ``hostile-server`` so that thread-count checks can
    tell them from the worker's own threads. ``requests`` counts requests served.
    """

    def __init__(self, respond: Respond) -> None:
        self.requests = 0
        self.respond = respond
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests += 1
                server.respond(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                threading.Thread(
                    target=self.process_request_thread,
                    args=(request, client_address),
                    name="hostile-server",
                    daemon=True,
                ).start()

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://localhost:{self.port}/file?X-Amz-Signature=secret-token"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hostile-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving (a client still looping then meets refused connections)."""
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def hostile_server() -> Iterator[Callable[[Respond], HostileServer]]:
    """Start :class:`HostileServer` instances answering with a given function."""
    servers: list[HostileServer] = []

    def start(respond: Respond) -> HostileServer:
        servers.append(HostileServer(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
