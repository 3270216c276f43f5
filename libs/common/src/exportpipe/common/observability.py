"""Structured logs and CloudWatch EMF metrics, with secrets and URLs kept out of both.

Logs are JSON lines from aws-lambda-powertools' ``Logger``; metrics are aggregated in
process and flushed as CloudWatch embedded-metric-format lines (namespace
``ExportPipe``) every ``metrics_flush_seconds`` and at shutdown. Every log record passes
through :class:`RedactingFilter`, which strips query strings, fragments and user info
from URLs and masks bearer tokens, because presigned download URLs carry their
signature in the query string.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit

from aws_lambda_powertools import Logger
from aws_lambda_powertools import Metrics as _PowertoolsMetrics
from aws_lambda_powertools.metrics import MetricUnit

__all__ = [
    "MetricUnit",
    "Metrics",
    "RedactingFilter",
    "get_logger",
    "redact_text",
    "redact_url",
]

_URL_RE = re.compile(r"""\b(?:https?|s3)://[^\s"'<>]+""", re.IGNORECASE)
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_SECRET_KV_RE = re.compile(
    r"(?i)\b(token|secret|password|signature|x-amz-signature|x-amz-credential)=([^&\s\"']+)"
)


def redact_url(url: str) -> str:
    """``url`` without user info, query string or fragment: safe to log."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range (a hostile redirect's)
    except ValueError:
        return "<unparseable-url>"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Redact every URL, bearer token and secret-looking ``key=value`` in ``text``."""
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER_RE.sub(r"\1 ***", text)
    return _SECRET_KV_RE.sub(r"\1=***", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and string extras) through :func:`redact_text`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact_text(message), ()
        for key, value in list(record.__dict__.items()):
            if key in {"msg", "message"} or not isinstance(value, str):
                continue
            if "://" in value or "=" in value or "earer" in value:
                record.__dict__[key] = redact_text(value)
        return True


_QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "smart_open")


def get_logger(service: str, *, level: str = "INFO") -> Logger:
    """The JSON logger for ``service``, with redaction and chatty libraries quietened.

    urllib3 logs full request paths (query strings included) at DEBUG, so it and the
    AWS SDK loggers are held at WARNING whatever our own level is.
    """
    logger = Logger(service=service, level=level, log_uncaught_exceptions=True)
    handler = logger.registered_handler
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return logger


class Metrics:
    """Thread-safe, aggregating EMF metrics.

    ``add`` only updates in-memory sums, so it is cheap on hot paths; :meth:`flush`
    writes one EMF document per dimension set through powertools. A background thread
    flushes every ``flush_seconds`` once :meth:`start` is called.
    """

    def __init__(self, *, namespace: str, service: str, flush_seconds: float = 60.0) -> None:
        self._namespace = namespace
        self._service = service
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._sums: dict[tuple[tuple[str, str], ...], dict[tuple[str, str], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, value: float = 1.0, unit: str = "Count", **dimensions: str) -> None:
        """Add ``value`` to metric ``name`` (summed until the next flush)."""
        key = tuple(sorted(dimensions.items()))
        with self._lock:
            self._sums[key][(name, unit)] += value

    def snapshot(self) -> dict[str, float]:
        """Current unflushed sums by metric name (all dimensions together); for tests."""
        totals: dict[str, float] = defaultdict(float)
        with self._lock:
            for metrics in self._sums.values():
                for (name, _unit), value in metrics.items():
                    totals[name] += value
        return dict(totals)

    def flush(self) -> None:
        """Write everything aggregated so far as EMF and reset."""
        with self._lock:
            pending, self._sums = self._sums, defaultdict(lambda: defaultdict(float))
        for dims, metrics in pending.items():
            emf = _PowertoolsMetrics(namespace=self._namespace, service=self._service)
            for key, dim in dims:
                emf.add_dimension(name=key, value=dim)
            for (name, unit), total in metrics.items():
                emf.add_metric(name=name, unit=MetricUnit(unit), value=total)
            emf.flush_metrics()

    def start(self) -> None:
        """Flush periodically in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the periodic flush and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            self.flush()
