"""A small HTTP proxy that adds a fixed delay to every request and counts SQS actions.

On a bare local emulator an SQS call costs what the emulator's Python spends on it; a
real SQS round trip costs ~10-20 ms of network and service time no matter how much work
it carries. Putting this proxy in front of the emulator restores that shape, so the
benchmark measures what batching and concurrency buy against real SQS.

Run: ``python -m bench.sqs_delay_proxy --upstream http://127.0.0.1:5000 --delay-ms 15``
(prints ``{"url": ...}``). ``GET /__proxy/stats`` returns request counts by SQS action;
``POST /__proxy/reset`` zeroes them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


class DelayProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` after sleeping ``delay`` seconds."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, upstream: str, delay: float, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.delay = delay
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.local = threading.local()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, action: str) -> None:
        with self.lock:
            self.counts[action] += 1

    def upstream(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
            self.local.conn = conn
        return conn


def _action(headers: Any, body: bytes) -> str:
    target = headers.get("X-Amz-Target")
    if target:  # JSON protocol: "AmazonSQS.SendMessageBatch"
        return str(target).rsplit(".", 1)[-1]
    if body:  # query protocol: Action=SendMessage&...
        actions = parse_qs(body.decode(errors="replace")).get("Action")
        if actions:
            return actions[0]
    return "other"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms) and the proxy would add far more than its delay.
    disable_nagle_algorithm = True
    server: DelayProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/__proxy/"):
            self._control(self.path)
            return
        self.server.count(_action(self.headers, body))
        time.sleep(self.server.delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in range(2):
            conn = self.server.upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.server.local.conn = None
                if attempt:
                    self.send_error(502)
                    return
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _control(self, path: str) -> None:
        if path == "/__proxy/reset":
            with self.server.lock:
                self.server.counts.clear()
            payload = b"{}"
        else:
            with self.server.lock:
                payload = json.dumps(dict(self.server.counts)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _proxy
    do_POST = _proxy
    do_PUT = _proxy
    do_DELETE = _proxy
    do_HEAD = _proxy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_delay_proxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    proxy = DelayProxy(args.upstream, args.delay_ms / 1000, port=args.port)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=proxy.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps({"url": proxy.url}), flush=True)
    proxy.serve_forever(poll_interval=0.2)
    proxy.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
