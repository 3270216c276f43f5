"""Streamed, verified downloads over HTTP(S) or from S3.

:func:`open_source` returns a :class:`Source`: a file-like object whose ``read(n)``
streams the file's bytes while hashing them. When the last byte has been read it checks
the size and sha256 the job promised and raises :class:`IntegrityError` if they differ,
so a consumer that reads to EOF before committing anything never commits a bad file.

HTTP specifics:

* connections go through :mod:`exportpipe.worker.safety` (address pinning per
  connection); redirects are followed here, one checked hop at a time;
* ``Accept-Encoding: identity`` and raw reads: the body is never decoded by urllib3;
* transient failures (connect errors, resets, 5xx, truncated bodies) are retried with
  tenacity, and a body cut short resumes with ``Range`` (``If-Range`` on the first
  response's validator) instead of starting over;
* every loop is bounded: at most ``attempts`` requests per (re)open, at most
  :data:`MAX_RESUMES` resumes per download, and a resume that delivers no byte counts
  as "no progress": :data:`MAX_STALLED_RESUMES` of those in a row (a server answering
  every ``Range`` with an empty ``206``) end the delivery as ``download_stalled``;
* cancellation (:class:`~exportpipe.common.cancel.CancelToken`) is observed before
  every request and read, and during every backoff, and raises the job's reason;
* hostile protocol values (a ``Content-Length`` that is not one number, a redirect to
  an unparseable URL, anything urllib3 or ``http.client`` chokes on) are classified:
  any error reading the response that is not already an :class:`ExportPipeError`
  becomes :class:`UpstreamRejected` with reason ``bad_response``;
* nothing logged or raised here carries the URL's query string;
* with a :class:`~exportpipe.worker.politeness.HostPoliteness` (one per process), a
  download holds one of its host's slots while it runs, no request goes to a host
  while that host's pause lasts, and a ``429``/``503`` with ``Retry-After`` pauses the
  host for every job of the process.

:class:`Prefetcher` moves the network reads to their own thread with a bounded queue of
chunks in between, so downloading overlaps decompression and validation.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from urllib3 import BaseHTTPResponse, HTTPHeaderDict, PoolManager, Timeout
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from exportpipe.common.cancel import CancelToken
from exportpipe.common.errors import (
    ExportPipeError,
    IntegrityError,
    JobReleased,
    RateLimited,
    UnsafeSource,
    UpstreamRejected,
    UpstreamUnavailable,
)
from exportpipe.common.observability import redact_url
from exportpipe.common.retry import aws_error_code
from exportpipe.worker.politeness import HostPoliteness, parse_retry_after
from exportpipe.worker.safety import AddressGuard, UnsafeAddressError, check_url
from exportpipe.worker.settings import DownloadTuning

__all__ = [
    "MAX_RESUMES",
    "MAX_STALLED_RESUMES",
    "HttpSource",
    "Prefetcher",
    "Readable",
    "S3Source",
    "Source",
    "open_source",
]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_DIGITS = re.compile(r"^[0-9]{1,20}$")
MAX_RESUMES = 50
"""Resumes one download may make in all; past it the delivery is retried later."""
MAX_STALLED_RESUMES = 3
"""Resumes in a row that deliver no byte before the file is refused (``download_stalled``)."""
_STALL_BACKOFF_SECONDS = 0.5
# Longest a closed Prefetcher waits for its thread: a request still waiting for response
# headers cannot be interrupted, but ends within its connect + read timeouts.
_JOIN_SECONDS = 120.0

_DEFAULT_TUNING = DownloadTuning()  # the settings' defaults


class Readable(Protocol):
    """The minimal file-like interface the data path passes around."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream."""


class Source:
    """Base of verified sources: hashing, size accounting, checks at EOF.

    Attributes:
        display_url: the URL without query string, safe to log and record.
        bytes_read: bytes delivered so far.
    """

    def __init__(
        self,
        display_url: str,
        *,
        expected_size: int | None,
        expected_sha256: str | None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.display_url = display_url
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.bytes_read = 0
        self._hash = hashlib.sha256()
        # A child: abort() stops this source's waits without cancelling the whole job.
        self._cancel = cancel.child() if cancel is not None else CancelToken()
        self._done = False

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes read so far (of the whole file once at EOF)."""
        return self._hash.hexdigest()

    def read(self, size: int = -1, /) -> bytes:
        """Read up to ``size`` bytes (``-1``: one chunk); verifies at EOF.

        Raises:
            IntegrityError: more bytes than expected, or size/sha256 mismatch at EOF.
            UpstreamRejected: the response broke the protocol (``bad_response``).
            ExportPipeError: the job was cancelled (the token's reason).
        """
        if self._done:
            return b""
        self._cancel.check()
        try:
            data = self._read_raw(size if size and size > 0 else 1 << 20)
        except ExportPipeError:
            raise
        except Exception as exc:
            # Third-party input reached code that did not expect it: refuse the file with
            # a named reason rather than crash the handler (type only: texts carry URLs).
            raise UpstreamRejected(
                f"{self.display_url}: unusable response ({type(exc).__name__})",
                reason="bad_response",
            ) from None
        if not data:
            self._verify()
            self._done = True
            return b""
        self._hash.update(data)
        self.bytes_read += len(data)
        if self.expected_size is not None and self.bytes_read > self.expected_size:
            raise IntegrityError(
                f"{self.display_url}: more than the expected {self.expected_size} bytes",
                reason="size_mismatch",
            )
        return data

    # -- resume hook (ADR 0020) ---------------------------------------------------

    @property
    def validator(self) -> str | None:
        """The source's version tag (HTTP ``ETag``/``Last-Modified``), if known."""
        return None

    def start_at(self, offset: int, *, hasher: Any, validator: str | None) -> None:
        """Continue an earlier attempt's read: the next byte read is byte ``offset``.

        ``hasher`` holds the sha256 state of bytes ``0..offset`` (so the checks at EOF
        cover the whole file); ``validator`` is sent as ``If-Range``.

        Raises:
            NotImplementedError: this kind of source cannot resume.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot resume at an offset")

    def close(self) -> None:
        """Release the underlying connection."""

    def abort(self) -> None:
        """Stop this source's waits and unblock a read in another thread (best effort)."""
        self._cancel.cancel(JobReleased("download abandoned"))

    def _read_raw(self, size: int) -> bytes:
        raise NotImplementedError

    def _verify(self) -> None:
        if self.expected_size is not None and self.bytes_read != self.expected_size:
            raise IntegrityError(
                f"{self.display_url}: got {self.bytes_read} bytes, expected {self.expected_size}",
                reason="size_mismatch",
            )
        if self.expected_sha256 is not None and self.sha256 != self.expected_sha256:
            raise IntegrityError(
                f"{self.display_url}: sha256 {self.sha256} does not match the expected "
                f"{self.expected_sha256}",
                reason="sha256_mismatch",
            )


def _content_length(headers: HTTPHeaderDict, display_url: str) -> int | None:
    """The ``Content-Length`` as one number, or ``None`` when absent.

    Raises:
        UpstreamRejected: the header is not a single decimal number (``abc``, ``56, 56``,
            two headers): a body whose length is ambiguous cannot be verified.
    """
    values = headers.getlist("Content-Length")
    if not values:
        return None
    if len(values) != 1 or not _DIGITS.match(values[0].strip()):
        raise UpstreamRejected(
            f"{display_url}: malformed Content-Length {', '.join(values)[:40]!r}",
            reason="bad_content_length",
        )
    return int(values[0])


def _classify_status(status: int, headers: Any, display_url: str) -> ExportPipeError:
    if status == 429 or (status == 503 and headers.get("Retry-After")):
        # Seconds or an HTTP date (RFC 9110); an unreadable value leaves it to the runtime.
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RateLimited(f"{display_url}: HTTP {status}", retry_after=retry_after)
    if status >= 500 or status == 408:
        return UpstreamUnavailable(f"{display_url}: HTTP {status}", reason=f"http_{status}")
    return UpstreamRejected(f"{display_url}: HTTP {status}", reason=f"http_{status}")


def _discard(resp: BaseHTTPResponse) -> None:
    """Close a response that will not be read (its connection cannot be reused)."""
    with contextlib.suppress(Exception):
        resp.close()
        resp.release_conn()


def _find_unsafe(exc: BaseException) -> UnsafeSource | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, UnsafeAddressError):
            return cur.unsafe
        if isinstance(cur, UnsafeSource):
            return cur
        todo.extend([cur.__cause__, cur.__context__, getattr(cur, "reason", None)])
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
    return None


class HttpSource(Source):
    """An HTTP(S) download with checked redirects, retries and ``Range`` resume."""

    def __init__(
        self,
        url: str,
        *,
        manager: PoolManager,
        guard: AddressGuard,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        tuning: DownloadTuning = _DEFAULT_TUNING,
        cancel: CancelToken | None = None,
        max_wait_seconds: float = 10.0,
        politeness: HostPoliteness | None = None,
    ) -> None:
        super().__init__(
            redact_url(url),
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            cancel=cancel,
        )
        check_url(url, guard)
        self._url = url
        self._manager = manager
        self._guard = guard
        self._max_redirects = tuning.max_redirects
        self._attempts = tuning.attempts
        self._timeout = Timeout(connect=tuning.connect_timeout, read=tuning.read_timeout)
        self._max_wait = max_wait_seconds
        self._resp: BaseHTTPResponse | None = None
        self._validator: str | None = None  # ETag or Last-Modified of the first response
        self._total: int | None = None  # the full length, from the first response
        self.resumed = 0  # reads resumed after an interruption, for metrics and tests
        self._stalled = 0  # resumes in a row that delivered no byte
        self._progress = 0  # bytes the current response delivered
        self._politeness = politeness
        self._slot_host: str | None = None  # the host whose politeness slot is held

    # -- politeness -----------------------------------------------------------

    def _take_slot(self) -> None:
        if self._politeness is not None and self._slot_host is None:
            host = urlsplit(self._url).hostname or ""
            self._politeness.acquire(host, self._cancel)
            self._slot_host = host

    def _give_slot(self) -> None:
        if self._politeness is not None and self._slot_host is not None:
            self._politeness.release(self._slot_host)
            self._slot_host = None

    @property
    def validator(self) -> str | None:
        """The first response's ``ETag`` or ``Last-Modified`` (``None`` before it)."""
        return self._validator

    def start_at(self, offset: int, *, hasher: Any, validator: str | None) -> None:
        """See :meth:`Source.start_at`: the first request asks for ``Range: offset-``."""
        if self.bytes_read or self._resp is not None:
            raise RuntimeError("start_at() must come before the first read")
        self.bytes_read = offset
        self._hash = hasher
        self._validator = validator
        self._total = self.expected_size

    # -- opening ------------------------------------------------------------

    def _request(self, offset: int) -> BaseHTTPResponse:
        """GET from ``offset``, following checked redirects; return a 200/206 response."""
        headers = {"Accept-Encoding": "identity", "User-Agent": "exportpipe-worker"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self._validator:
                headers["If-Range"] = self._validator
        url = self._url
        for _hop in range(self._max_redirects + 1):
            self._cancel.check()
            check_url(url, self._guard)
            if self._politeness is not None:
                self._politeness.before_request(urlsplit(url).hostname, self._cancel)
            try:
                resp = self._manager.request(
                    "GET",
                    url,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    decode_content=False,
                    timeout=self._timeout,
                )
            except (Urllib3HTTPError, OSError) as exc:
                unsafe = _find_unsafe(exc) if isinstance(exc, Urllib3HTTPError) else None
                if unsafe is not None:
                    raise unsafe from None
                raise UpstreamUnavailable(
                    f"{redact_url(url)}: {type(exc).__name__}", reason="connection_failed"
                ) from None
            except ValueError as exc:
                # urllib3 parses the (redirect) URL itself: a port out of range, a bad
                # IPv6 literal... The target is unusable, not the network.
                raise UnsafeSource(
                    f"{redact_url(url)}: unusable URL ({type(exc).__name__})", reason="bad_url"
                ) from None
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                resp.drain_conn()
                resp.release_conn()
                if not location:
                    raise UpstreamRejected(
                        f"{redact_url(url)}: redirect without Location", reason="bad_redirect"
                    )
                try:
                    url = urljoin(url, location)
                except ValueError:
                    raise UnsafeSource(
                        f"{redact_url(url)}: unparseable redirect Location", reason="bad_redirect"
                    ) from None
                continue
            if resp.status in (200, 206):
                return resp
            if self._politeness is not None:
                self._politeness.note_response(urlsplit(url).hostname, resp.status, resp.headers)
            error = _classify_status(resp.status, resp.headers, redact_url(url))
            resp.drain_conn()
            resp.release_conn()
            raise error
        raise UnsafeSource(
            f"{self.display_url}: more than {self._max_redirects} redirects",
            reason="too_many_redirects",
        )

    def _open_at(self, offset: int) -> BaseHTTPResponse:
        resp = self._request(offset)
        try:
            length = _content_length(resp.headers, self.display_url)
        except UpstreamRejected:
            _discard(resp)
            raise
        if resp.status == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                resp.release_conn()
                raise UpstreamUnavailable(
                    f"{self.display_url}: unusable Content-Range in a resume", reason="bad_range"
                )
            return resp
        # A full body: the first response, or a server that ignored Range/If-Range.
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if offset == 0:
            self._validator = validator
            if length is not None:
                self._total = length
                if self.expected_size is not None and self._total != self.expected_size:
                    resp.release_conn()
                    raise IntegrityError(
                        f"{self.display_url}: Content-Length {self._total} differs from the "
                        f"expected size {self.expected_size}",
                        reason="size_mismatch",
                    )
            return resp
        if self._validator and validator and validator != self._validator:
            resp.release_conn()
            raise IntegrityError(
                f"{self.display_url}: the file changed during the download", reason="source_changed"
            )
        self._skip(resp, offset)
        return resp

    @staticmethod
    def _skip(resp: BaseHTTPResponse, count: int) -> None:
        """Discard ``count`` bytes (a server without Range support: start over, quietly)."""
        while count > 0:
            data = resp.read(min(count, 1 << 20), decode_content=False)
            if not data:
                raise UpstreamUnavailable("body ended while skipping to the resume offset")
            count -= len(data)

    def _open_with_retry(self, offset: int) -> BaseHTTPResponse:
        retrying = Retrying(
            retry=retry_if_exception_type(UpstreamUnavailable),
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=self._max_wait, jitter=0.2),
            sleep=self._cancel.sleep,  # a cancelled job stops backing off at once
            # No before_sleep logging: tenacity's would print URLs; callers see the
            # final error instead.
            reraise=True,
        )
        return retrying(self._open_at, offset)

    # -- reading ------------------------------------------------------------

    def _read_raw(self, size: int) -> bytes:
        while True:
            self._cancel.check()
            if self._resp is None:
                self._take_slot()
                self._resp = self._open_with_retry(self.bytes_read)
                self._progress = 0
            try:
                data = self._resp.read(size, decode_content=False)
            except (Urllib3HTTPError, OSError) as exc:
                self._drop_response()
                self._cancel.check()
                self._resume(type(exc).__name__)
                continue
            if data:
                self._progress += len(data)
                self._stalled = 0
                return data
            if self._total is not None and self.bytes_read < self._total:
                # Closed early without urllib3 noticing (no Content-Length enforcement).
                self._drop_response()
                self._resume("body ended early")
                continue
            self._drop_response()
            self._give_slot()
            return b""

    def _resume(self, why: str) -> None:
        """Count one resume; refuse or give up when the budget or progress says so."""
        self.resumed += 1
        if self._progress == 0:
            self._stalled += 1
            if self._stalled >= MAX_STALLED_RESUMES:
                # A server answering every resume with nothing would be asked forever.
                # Retryable: the next delivery starts over, at most max_receive_count.
                raise UpstreamUnavailable(
                    f"{self.display_url}: {self._stalled} resumes in a row at byte "
                    f"{self.bytes_read} delivered nothing ({why})",
                    reason="download_stalled",
                )
            self._cancel.sleep(_STALL_BACKOFF_SECONDS * 2 ** (self._stalled - 1))
        if self.resumed > MAX_RESUMES:
            raise UpstreamUnavailable(
                f"{self.display_url}: gave up after {MAX_RESUMES} interrupted reads ({why})",
                reason="download_interrupted",
            )

    def _drop_response(self) -> None:
        if self._resp is not None:
            _discard(self._resp)  # a connection that failed mid-body cannot be reused
            self._resp = None

    def close(self) -> None:
        """Release the connection (the download may be abandoned midway)."""
        self._drop_response()
        self._give_slot()

    def abort(self) -> None:
        """Unblock a read stuck in another thread by shutting the socket down.

        Closing the response would wait for that read (the buffered reader's lock);
        ``shutdown`` does not, and makes the blocked ``recv`` return at once.
        """
        super().abort()
        resp = self._resp
        conn = getattr(resp, "connection", None) if resp is not None else None
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class S3Source(Source):
    """An ``s3://bucket/key`` source read through smart-open, with the same checks."""

    def __init__(
        self,
        url: str,
        *,
        s3_client: Any,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        super().__init__(
            redact_url(url),
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            cancel=cancel,
        )
        parts = urlsplit(url)
        if not parts.netloc or not parts.path.strip("/"):
            raise UpstreamRejected(
                f"{self.display_url}: not an s3://bucket/key URL", reason="bad_url"
            )
        import smart_open

        uri = f"s3://{parts.netloc}{parts.path}"
        try:
            self._fh = smart_open.open(
                uri, "rb", compression="disable", transport_params={"client": s3_client}
            )
        except ClientError as exc:
            raise UpstreamRejected(
                f"{self.display_url}: {aws_error_code(exc)}", reason="s3_source_error"
            ) from None
        except OSError as exc:
            raise UpstreamUnavailable(f"{self.display_url}: {type(exc).__name__}") from None

    def _read_raw(self, size: int) -> bytes:
        try:
            return bytes(self._fh.read(size))
        except (OSError, BotoCoreError, ClientError) as exc:
            # botocore has retried already; a later delivery may still succeed.
            raise UpstreamUnavailable(f"{self.display_url}: {type(exc).__name__}") from None

    def close(self) -> None:
        """Close the smart-open reader."""
        self._fh.close()


def open_source(
    url: str,
    *,
    manager: PoolManager,
    guard: AddressGuard,
    s3_client_factory: Callable[[], Any],
    expected_size: int | None,
    expected_sha256: str | None,
    tuning: DownloadTuning = _DEFAULT_TUNING,
    cancel: CancelToken | None = None,
    politeness: HostPoliteness | None = None,
) -> Source:
    """Open ``url`` (http, https or s3) as a verified :class:`Source`.

    Raises:
        UnsafeSource: the URL is refused by the safety rules.
        UpstreamRejected: the URL cannot be used (bad form, 4xx).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "s3":
        return S3Source(
            url,
            s3_client=s3_client_factory(),
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            cancel=cancel,
        )
    return HttpSource(
        url,
        manager=manager,
        guard=guard,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        tuning=tuning,
        cancel=cancel,
        politeness=politeness,
    )


class Prefetcher:
    """Reads ``source`` in a background thread into a bounded queue of chunks.

    ``read(n)`` hands out the prefetched bytes. Errors raised by the source (including
    the integrity checks at EOF) are re-raised in the reading thread. At most
    ``depth`` chunks of ``chunk_size`` are buffered.

    The thread never outlives the job: it stops when the job's token is cancelled (the
    source's reads and backoffs observe it), and :meth:`close` cancels the source's own
    token and cuts its connection, then joins the thread.
    """

    def __init__(
        self,
        source: Source,
        *,
        chunk_size: int,
        depth: int,
        cancel: CancelToken | None = None,
    ) -> None:
        self.source = source
        self._cancel = cancel
        self._chunk = chunk_size
        # Chunks, then b"" (the end) or the exception the source raised.
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pending = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="download", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException) -> bool:
        while not self._stop.is_set() and not (self._cancel is not None and self._cancel.cancelled):
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self.source.read(self._chunk)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:
            self._put(exc)

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (``-1``: the next chunk); ``b""`` once the source is done."""
        if not self._pending:
            if self._eof:
                return b""
            item = self._next()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._eof = not item
            if size < 0 or len(item) <= size:
                return item
            self._pending = memoryview(item)
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return bytes(out)

    def _next(self) -> bytes | BaseException:
        # Wake up regularly so a cancelled job stops even while the network stalls.
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._cancel is not None:
                    self._cancel.check()

    def finish(self) -> None:
        """Read to the end (discarding), so the source's checks at EOF have run."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        """Stop the background reader, wait for it, and close the source."""
        self._stop.set()
        self._thread.join(timeout=0.2)
        if self._thread.is_alive():
            # Backing off, or blocked in a network read (a stalled server): wake it and
            # cut the connection. Every wait is on the source's token and every read has
            # a timeout, so the thread ends.
            self.source.abort()
            self._thread.join(timeout=_JOIN_SECONDS)
        self.source.close()
