"""A fault-injecting HTTP proxy to put between boto3 and the moto server.

Tests and benchmarks point ``AWS_ENDPOINT_URL`` at the proxy instead of moto. Each
request is forwarded unchanged unless a rule intervenes: a rule sees the request's
operation (``X-Amz-Target`` for SQS/DynamoDB JSON calls, ``METHOD /path`` otherwise)
and may add latency, answer with an error, reset the connection, forward the request and
then reset the connection instead of answering (the call took effect but the caller never
learns it, so its retry meets its own earlier write), or rewrite the JSON body of a
SendMessageBatch to report some entries as failed (those entries are *not* forwarded, so
a retry is not a duplicate).

Benchmarks run it as a process that only adds latency, to give a local emulator the
shape of a real AWS round trip::

    python -m exportpipe.testing.proxy --upstream http://127.0.0.1:5000 --delay-ms 15

It prints ``{"url": ...}``; ``GET /__proxy/stats`` returns the request counts by
operation and ``POST /__proxy/reset`` zeroes them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "Request"]


@dataclass(frozen=True)
class Request:
    """What a rule sees of a request."""

    method: str
    path: str
    operation: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Fault:
    """What a rule asks for. All fields optional; an empty Fault forwards untouched.

    Attributes:
        delay: seconds to wait before acting.
        status / error_code: answer with this HTTP status and AWS error code.
        reset: close the connection without forwarding the request.
        drop_response: forward the request, then close the connection without answering.
        fail_batch_entries: report the first N entries of a batch call as failed.
    """

    delay: float = 0.0
    status: int | None = None
    error_code: str = "InternalError"
    reset: bool = False
    drop_response: bool = False
    fail_batch_entries: int = 0


Rule = Callable[[Request], Fault | None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Benchmarks open many connections at once; the default backlog of 5 drops SYNs.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-request (a killed process, a timed-out call) is
        # routine here; anything else is a bug in the proxy and is printed.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


@dataclass
class FaultProxy:
    """Forwarding proxy on 127.0.0.1 with pluggable fault rules.

    Attributes:
        upstream: the moto server endpoint (``http://127.0.0.1:PORT``).
        delay: fixed latency added to every request (stands in for a real AWS round trip).
        rules: consulted in order; the first that returns a :class:`Fault` applies.
        seed: for rules that draw random numbers through :attr:`rng`.
    """

    upstream: str
    delay: float = 0.0
    port: int = 0
    rules: list[Rule] = field(default_factory=list)
    seed: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        parts = urlsplit(self.upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._local = threading.local()

    @property
    def endpoint(self) -> str:
        """The proxy's URL, to use as ``AWS_ENDPOINT_URL``."""
        assert self._server is not None, "proxy not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        proxy = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, the body waits
            # for the client's delayed ACK (~40 ms), far more than any delay we add.
            disable_nagle_algorithm = True

            def log_message(self, *_: Any) -> None:
                return

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = _Server(("127.0.0.1", self.port), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if h.path.startswith("/__proxy/"):
            self._control(h)
            return
        target = h.headers.get("X-Amz-Target", "")
        operation = target.rsplit(".", 1)[-1] if target else f"{h.command} {h.path.split('?')[0]}"
        request = Request(h.command, h.path, operation, dict(h.headers.items()), body)
        with self._lock:
            self.counts[operation] += 1
            fault = next((f for rule in self.rules if (f := rule(request)) is not None), None)
            if fault is not None:
                self.faults[self._fault_kind(fault)] += 1
        if self.delay:
            time.sleep(self.delay)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.reset or fault.drop_response:
                if fault.drop_response:
                    self._upstream(h, body)
                h.close_connection = True
                h.connection.shutdown(2)
                return
            if fault.status is not None:
                self._reply_error(h, fault, bool(target))
                return
            if fault.fail_batch_entries and target:
                body, failed = self._drop_entries(body, fault.fail_batch_entries)
                self._forward(h, body, failed=failed)
                return
        self._forward(h, body)

    def _control(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            if h.path == "/__proxy/reset":
                self.counts.clear()
                self.faults.clear()
            payload = json.dumps(dict(self.counts)).encode()
        _reply(h, 200, {"Content-Type": "application/json"}, payload)

    @staticmethod
    def _fault_kind(fault: Fault) -> str:
        if fault.reset:
            return "reset"
        if fault.drop_response:
            return "drop_response"
        if fault.status is not None:
            return f"{fault.status}:{fault.error_code}"
        if fault.fail_batch_entries:
            return "batch_partial_failure"
        return "delay"

    @staticmethod
    def _drop_entries(body: bytes, n: int) -> tuple[bytes, list[str]]:
        data = json.loads(body)
        entries = data.get("Entries", [])
        failed = [e["Id"] for e in entries[:n]]
        data["Entries"] = entries[n:]
        return json.dumps(data).encode(), failed

    def _upstream(
        self, h: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """Send the request to the upstream; return its status, body and headers."""
        headers = {
            k: v for k, v in h.headers.items() if k.lower() not in {"host", "content-length"}
        }
        # One kept-alive upstream connection per handler thread; a stale one is replaced.
        for attempt in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
                self._local.conn = conn
            try:
                conn.request(h.command, h.path, body=body, headers=headers)
                resp = conn.getresponse()
                out = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        # A HEAD answer's Content-Length is the object's size, not the (empty) body's.
        dropped = {"transfer-encoding", "connection"}
        if h.command != "HEAD":
            dropped.add("content-length")
        resp_headers = {k: v for k, v in resp.getheaders() if k.lower() not in dropped}
        return resp.status, out, resp_headers

    def _forward(
        self, h: BaseHTTPRequestHandler, body: bytes, failed: list[str] | None = None
    ) -> None:
        if failed is not None and not json.loads(body).get("Entries"):
            status, out, resp_headers = (
                200,
                b'{"Successful": []}',
                {"Content-Type": "application/x-amz-json-1.0"},
            )
        else:
            status, out, resp_headers = self._upstream(h, body)
        if failed:
            data = json.loads(out or b"{}")
            data.setdefault("Failed", []).extend(
                {"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "injected"}
                for i in failed
            )
            out = json.dumps(data).encode()
        _reply(h, status, resp_headers, None if h.command == "HEAD" else out)

    @staticmethod
    def _reply_error(h: BaseHTTPRequestHandler, fault: Fault, json_protocol: bool) -> None:
        assert fault.status is not None
        if json_protocol:
            payload = json.dumps({"__type": fault.error_code, "message": "injected fault"}).encode()
            ctype = "application/x-amz-json-1.0"
        else:
            payload = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.error_code}</Code>"
                "<Message>injected fault</Message></Error>"
            ).encode()
            ctype = "application/xml"
        headers = {"Content-Type": ctype, "x-amzn-query-error": f"{fault.error_code};Sender"}
        _reply(h, fault.status, headers, payload)


def _reply(
    h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes | None
) -> None:
    """Answer with ``headers`` and ``payload`` (``None``: headers only, a HEAD answer)."""
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if payload is not None:
        h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    if payload is not None:
        h.wfile.write(payload)


def main(argv: list[str] | None = None) -> int:
    """Run a latency-only proxy until SIGTERM/SIGINT (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m exportpipe.testing.proxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, delay=args.delay_ms / 1000, port=args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"url": proxy.endpoint}), flush=True)
    stop.wait()
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
