"""The Export API reference contract v1 over HTTP/JSON (see ``docs/export-api.md``).

Transport rules, and why:

* **Bounded pool.** One urllib3 pool with ``api_concurrency`` connections, blocking when
  all are busy, and a semaphore of the same size: however many handler threads run,
  the vendor sees at most that many calls from this process.
* **Retry-After is honoured process-wide.** A 429 (or a 503 with ``Retry-After``)
  raises :class:`RateLimited` so the queue runtime returns the message after that delay
  instead of a thread sleeping on it; until the delay has passed, every other call from
  this process fails fast with ``RateLimited`` too, rather than hammering the vendor.
  The delay is capped at 15 minutes (``RETRY_AFTER_MAX_SECONDS``, as the runtime caps
  it): asked for more, we ask again sooner rather than vanish for hours.
* **Brief 5xx and timeouts** are retried a few times in-process with jittered backoff
  (cheap, and most blips last well under a second); then :class:`UpstreamUnavailable`
  hands the message back to the queue with backoff.
* **Permanent:** 401/403, 404, other 4xx, redirects (never followed: a redirect could
  carry the bearer token to another host), and bodies that break the contract raise
  :class:`UpstreamRejected` with a specific ``reason``.
* **Nothing secret in errors or logs.** Messages name the path only (cursors travel in
  the query string), never the token.
* ``Accept-Encoding: identity``: a listing is read raw with a size cap, so no
  decompression bomb can come through ``Content-Encoding``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import partial
from typing import Any, cast
from urllib.parse import quote, urlencode, urlsplit

import orjson
import urllib3
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from exportpipe.common.errors import RateLimited, UpstreamRejected, UpstreamUnavailable
from exportpipe.common.retry import parse_retry_after as _parse_retry_after
from exportpipe.common.sqs import RETRY_AFTER_MAX_SECONDS
from exportpipe.orchestrator.settings import (
    DEFAULT_API_CLIENT,
    ApiClientConfig,
    OrchestratorSettings,
)
from exportpipe.orchestrator.source import (
    ExportInfo,
    ExportNotReady,
    ExportSource,
    FilePage,
    ListedFile,
)

__all__ = ["HttpExportSource", "http_v1", "parse_retry_after"]

_STATUSES = frozenset({"pending", "running", "ready", "failed", "expired"})
_MAX_BODY_BYTES = 64 * 2**20
_DEFAULT_RETRY_AFTER = 30.0
_READ_CHUNK = 256 * 1024


# Clamped to [0, 15 min] as the module docstring says.
parse_retry_after = partial(_parse_retry_after, cap=RETRY_AFTER_MAX_SECONDS)


class _Transient(UpstreamUnavailable):
    """A failure worth retrying in-process before giving up on this receive."""


class HttpExportSource(ExportSource):
    """Client for the contract v1 Export API.

    Args:
        base_url: the API's base URL; ``/v1/...`` is appended (a base that already ends
            in ``/v1`` is accepted as the same).
        token: the bearer token.
        config: concurrency, timeouts and in-process retries.
    """

    def __init__(
        self, base_url: str, token: str, *, config: ApiClientConfig = DEFAULT_API_CLIENT
    ) -> None:
        base = base_url.rstrip("/")
        if urlsplit(base).path.endswith("/v1"):
            base = base[: -len("/v1")]
        self._base = base
        self._auth = f"Bearer {token}"
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=config.concurrency,
            block=True,
            timeout=urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
            retries=False,
        )
        self._retry_attempts = config.retry_attempts
        self._retry_max_wait = config.retry_max_wait
        self._cool_lock = threading.Lock()
        self._blocked_until = 0.0

    @classmethod
    def from_settings(cls, settings: OrchestratorSettings) -> HttpExportSource:
        """Build from the orchestrator's settings."""
        return cls(
            settings.export_api_url,
            settings.export_api_token.get_secret_value(),
            config=settings.api_client,
        )

    # ------------------------------------------------------------------ API

    def get_export(self, export_id: str) -> ExportInfo:
        path = f"/v1/exports/{quote(export_id, safe='')}"
        status, body = self._call(path, {})
        if status != 200:
            self._reject(status, path)
        data = self._json_object(body, path)
        state = data.get("status")
        if state not in _STATUSES:
            raise UpstreamRejected(
                f"GET {path}: status {state!r} is not one of {sorted(_STATUSES)}",
                reason="malformed_status",
            )
        count = data.get("file_count")
        if count is not None and (not _is_int(count) or count < 0):
            raise UpstreamRejected(
                f"GET {path}: file_count must be a non-negative integer or null",
                reason="malformed_status",
            )
        return ExportInfo(export_id=export_id, status=state, file_count=count)

    def list_files(self, export_id: str, *, cursor: str | None, limit: int) -> FilePage:
        path = f"/v1/exports/{quote(export_id, safe='')}/files"
        query: dict[str, str] = {"limit": str(limit)}
        if cursor is not None:
            query["cursor"] = cursor
        status, body = self._call(path, query)
        if status == 409:
            state = None
            with contextlib.suppress(orjson.JSONDecodeError):  # its body (and status) is optional
                parsed = orjson.loads(body)
                if isinstance(parsed, dict) and isinstance(parsed.get("status"), str):
                    state = parsed["status"]
            raise ExportNotReady(f"GET {path}: 409, export not ready", status=state)
        if status != 200:
            self._reject(status, path)
        data = self._json_object(body, path)
        files = data.get("files")
        next_cursor = data.get("next_cursor")
        if not isinstance(files, list):
            raise UpstreamRejected(f"GET {path}: 'files' is not a list", reason="malformed_listing")
        if next_cursor is not None and (not isinstance(next_cursor, str) or not next_cursor):
            raise UpstreamRejected(
                f"GET {path}: 'next_cursor' must be a non-empty string or null",
                reason="malformed_listing",
            )
        return FilePage(
            files=tuple(_listed_file(entry, i, path) for i, entry in enumerate(files)),
            next_cursor=next_cursor,
        )

    def close(self) -> None:
        self._pool.clear()

    # ------------------------------------------------------------ transport

    def _call(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_exponential_jitter(multiplier=0.1, max=self._retry_max_wait, jitter=0.2),
            reraise=True,
        )
        try:
            return retrying(self._once, path, query)
        except _Transient as exc:
            raise UpstreamUnavailable(exc.message) from None

    def _once(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        self._check_cooldown(path)
        url = f"{self._base}{path}"
        if query:
            url += "?" + urlencode(query)
        with self._slots:
            try:
                response = self._pool.request(
                    "GET",
                    url,
                    headers={
                        "Authorization": self._auth,
                        "Accept": "application/json",
                        "Accept-Encoding": "identity",
                    },
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                # The exception text can contain the full URL (and so the cursor).
                raise _Transient(f"GET {path}: {type(exc).__name__}") from None
            try:
                status = response.status
                if status == 429 or (status == 503 and "Retry-After" in response.headers):
                    delay = parse_retry_after(response.headers.get("Retry-After"))
                    delay = _DEFAULT_RETRY_AFTER if delay is None else delay
                    self._cool_down(delay)
                    raise RateLimited(
                        f"GET {path}: {status}, retry after {delay:g} s", retry_after=delay
                    )
                if status >= 500 or status == 408:
                    raise _Transient(f"GET {path}: HTTP {status}")
                return status, self._read(response, path)
            finally:
                response.release_conn()

    def _read(self, response: urllib3.BaseHTTPResponse, path: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.stream(_READ_CHUNK, decode_content=False):
                total += len(chunk)
                if total > _MAX_BODY_BYTES:
                    raise UpstreamRejected(
                        f"GET {path}: body larger than {_MAX_BODY_BYTES} bytes",
                        reason="response_too_large",
                    )
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise _Transient(f"GET {path}: body cut short ({type(exc).__name__})") from None
        return b"".join(chunks)

    def _check_cooldown(self, path: str) -> None:
        with self._cool_lock:
            left = self._blocked_until - time.monotonic()
        if left > 0:
            raise RateLimited(f"GET {path}: rate limited for {left:.1f} s more", retry_after=left)

    def _cool_down(self, seconds: float) -> None:
        with self._cool_lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)

    # -------------------------------------------------------------- parsing

    @staticmethod
    def _reject(status: int, path: str) -> None:
        if status in (401, 403):
            reason = "upstream_unauthorized" if status == 401 else "upstream_forbidden"
            raise UpstreamRejected(
                f"GET {path}: HTTP {status}; check EXPORTPIPE_EXPORT_API_TOKEN", reason=reason
            )
        if status == 404:
            raise UpstreamRejected(
                f"GET {path}: HTTP 404, no such export", reason="export_not_found"
            )
        if 300 <= status < 400:
            raise UpstreamRejected(
                f"GET {path}: HTTP {status} redirect (redirects are not followed)",
                reason="upstream_redirect",
            )
        raise UpstreamRejected(f"GET {path}: HTTP {status}", reason="upstream_client_error")

    @staticmethod
    def _json_object(body: bytes, path: str) -> dict[str, Any]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamRejected(
                f"GET {path}: body is not JSON ({len(body)} bytes)", reason="malformed_response"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamRejected(
                f"GET {path}: body is a JSON {type(data).__name__}, expected an object",
                reason="malformed_response",
            )
        return cast(dict[str, Any], data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(entry: dict[str, Any]) -> str | None:
    for key in ("file_id", "name", "url"):
        if not isinstance(entry.get(key), str):
            return f"{key!r} must be a string"
    size = entry.get("size_bytes")
    if size is not None and not _is_int(size):
        return "'size_bytes' must be an integer or null"
    for key in ("sha256", "compression"):
        if entry.get(key) is not None and not isinstance(entry.get(key), str):
            return f"{key!r} must be a string or null"
    if not isinstance(entry.get("format"), str):
        return "'format' must be a string"
    return None


def _listed_file(entry: object, index: int, path: str) -> ListedFile:
    """Check an entry's JSON *types*; the handler checks its values against the contract.

    An entry with wrong types comes back with ``problem`` set (and its fields as text),
    so that the handler rejects that entry alone and the rest of the page goes on.
    """
    if not isinstance(entry, dict):
        # No usable id: the entry's own JSON stands for it (stable across re-runs).
        text = orjson.dumps(entry).decode()[:1000]
        return ListedFile(
            file_id=text,
            name="",
            url="",
            problem=f"GET {path}: files[{index}] is a JSON {type(entry).__name__}, "
            "expected an object",
        )
    problem = _type_problem(entry)
    if problem is not None:
        file_id = entry.get("file_id")
        return ListedFile(
            # Without a string id, the entry's own JSON stands for it (as above).
            file_id=file_id if isinstance(file_id, str) else orjson.dumps(entry).decode()[:1000],
            name=str(entry.get("name", ""))[:1024],
            url=str(entry.get("url", ""))[:8192],
            problem=f"GET {path}: files[{index}]: {problem}",
        )
    return ListedFile(
        file_id=entry["file_id"],
        name=entry["name"],
        url=entry["url"],
        size_bytes=entry.get("size_bytes"),
        sha256=entry.get("sha256"),
        compression=entry.get("compression"),
        format=entry["format"],
    )


def http_v1(settings: OrchestratorSettings) -> ExportSource:
    """The built-in source, registered as ``http-v1`` in the entry-point group."""
    return HttpExportSource.from_settings(settings)
