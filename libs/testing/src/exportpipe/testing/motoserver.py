"""A moto server with DynamoDB requests serialized (tests and the local stack).

moto's DynamoDB backend is not thread-safe, and ``moto.server`` answers each request on
its own thread: two concurrent ``UpdateItem`` / ``TransactWriteItems`` calls on one item
can interleave and lose an ``ADD`` (measured here: 4 threads x 10 counted files, a
counter ended 1 or 2 short in 2 of 5 runs). Real DynamoDB applies the writes to an item
one at a time, and the export tracker's exactly-once counting relies on that. This
server is ``moto.server`` with one lock around every DynamoDB request, and with moto's
SQS patched so concurrent sends and deletes do not lose messages and S3 bodies copied
once, not three times (:mod:`exportpipe.testing.moto_patches`); SQS, S3 and SNS stay concurrent (SQS
long polls must not block each other).

Run as ``python -m exportpipe.testing.motoserver -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = ["SerializedDynamoDB", "main"]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SerializedDynamoDB:
    """WSGI middleware: one DynamoDB request at a time, everything else concurrent."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with self._lock:
            # Produce the whole body under the lock: the backend runs while it is built.
            result = self._app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def main(argv: list[str] | None = None) -> None:
    """Serve moto on ``--host``/``--port`` until SIGTERM or SIGINT."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    from exportpipe.testing.moto_patches import patch_dynamodb, patch_s3, patch_sqs

    patch_sqs()
    patch_s3()
    patch_dynamodb()

    parser = argparse.ArgumentParser(prog="python -m exportpipe.testing.motoserver")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)

    def _exit(_signum: int, _frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerializedDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
