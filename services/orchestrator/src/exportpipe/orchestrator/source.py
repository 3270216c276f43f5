"""The ``ExportSource`` interface every vendor plug-in implements, and its registry.

The handler only ever talks to an :class:`ExportSource`: "what is the export's status"
and "give me one page of its files". A vendor whose API looks nothing like contract v1
is supported by writing one class and registering it, either in code::

    @register_source("acme-v2")
    def _acme(settings: OrchestratorSettings) -> ExportSource:
        return AcmeSource(...)

or from any distribution, through the ``exportpipe.export_sources`` entry-point group
(``name = "package.module:factory"``), as the built-in ``http-v1`` source is (see this
member's ``pyproject.toml``). ``EXPORTPIPE_EXPORT_SOURCE`` picks one.

What a source must guarantee, so the handler's retry and dead-letter decisions hold:

* transient failures raise :class:`~exportpipe.common.errors.UpstreamUnavailable` or
  :class:`~exportpipe.common.errors.RateLimited` (with ``retry_after`` when known);
* "not ready yet" raises :class:`ExportNotReady` from :meth:`ExportSource.list_files`;
* permanent refusals (auth, unknown export, a body that breaks the contract) raise
  :class:`~exportpipe.common.errors.UpstreamRejected` with a specific ``reason``;
* it is safe to call from several threads at once, and it never logs URLs with their
  query strings or the credentials it holds.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Literal

from exportpipe.common.errors import RetryableError

if TYPE_CHECKING:
    from exportpipe.orchestrator.settings import OrchestratorSettings

__all__ = [
    "ENTRY_POINT_GROUP",
    "ExportInfo",
    "ExportNotReady",
    "ExportSource",
    "ExportStatus",
    "FilePage",
    "ListedFile",
    "SourceFactory",
    "UnknownSource",
    "available_sources",
    "create_source",
    "register_source",
]

ENTRY_POINT_GROUP = "exportpipe.export_sources"

ExportStatus = Literal["pending", "running", "ready", "failed", "expired"]
NOT_READY: frozenset[str] = frozenset({"pending", "running"})
GONE: frozenset[str] = frozenset({"failed", "expired"})


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """An export's status as the upstream reports it."""

    export_id: str
    status: ExportStatus
    file_count: int | None = None


@dataclass(frozen=True, slots=True)
class ListedFile:
    """One listed file, as the upstream described it (validated later by the handler).

    Fields keep the upstream's values as given, so that an entry breaking the contract
    can be reported precisely instead of being coerced into something plausible.
    ``problem``, when set by the source, says why the entry cannot be used at all (its
    JSON types are wrong); the handler then rejects that entry alone, at listing time.
    """

    file_id: str
    name: str
    url: str
    size_bytes: int | None = None
    sha256: str | None = None
    compression: str | None = None
    format: str = "binary"
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class FilePage:
    """One page of an export's listing; ``next_cursor`` is ``None`` on the last page."""

    files: tuple[ListedFile, ...]
    next_cursor: str | None


class ExportNotReady(RetryableError):
    """The export cannot be listed yet (409, or status pending/running).

    The handler never lets this reach the queue runtime: it re-enqueues the request with
    a growing delay instead (see :mod:`exportpipe.orchestrator.handler`).
    """

    reason = "export_not_ready"

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnknownSource(LookupError):
    """No plug-in is registered under the configured name."""


class ExportSource(ABC):
    """A vendor's Export API, as the orchestrator needs it."""

    @abstractmethod
    def get_export(self, export_id: str) -> ExportInfo:
        """The export's current status.

        Raises:
            UpstreamRejected: unknown export, auth failure, or a malformed answer.
            UpstreamUnavailable / RateLimited: transient; try again later.
        """

    @abstractmethod
    def list_files(self, export_id: str, *, cursor: str | None, limit: int) -> FilePage:
        """One page of files, starting at ``cursor`` (``None``: the first page).

        Raises:
            ExportNotReady: the export is not ready to be listed yet.
            UpstreamRejected / UpstreamUnavailable / RateLimited: as :meth:`get_export`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections."""


SourceFactory = Callable[["OrchestratorSettings"], ExportSource]

_registry: dict[str, SourceFactory] = {}
_registry_lock = threading.Lock()


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator registering ``factory`` as the plug-in called ``name``."""

    def decorate(factory: SourceFactory) -> SourceFactory:
        with _registry_lock:
            _registry[name] = factory
        return factory

    return decorate


def available_sources() -> list[str]:
    """Names of every source that can be created (registered in code or entry points)."""
    with _registry_lock:
        names = set(_registry)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def create_source(settings: OrchestratorSettings) -> ExportSource:
    """Build the source named by ``settings.export_source``.

    Raises:
        UnknownSource: no such plug-in.
    """
    name = settings.export_source
    with _registry_lock:
        factory = _registry.get(name)
    if factory is None:
        factory = next((ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP, name=name)), None)
    if factory is None:
        raise UnknownSource(
            f"EXPORTPIPE_EXPORT_SOURCE={name!r} is not a known export source; "
            f"available: {', '.join(available_sources())}"
        )
    return factory(settings)
