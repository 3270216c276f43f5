"""exportpipe.orchestrator: Export API pages into download jobs on SQS 2.

Each ``ExportRequested`` on SQS 1 is one page: fetch it from the vendor's Export API
(through an :class:`ExportSource` plug-in), send one ``DownloadJob`` per file to SQS 2,
send the continuation back to SQS 1. See :mod:`exportpipe.orchestrator.handler`.
"""

from exportpipe.orchestrator.handler import PageHandler, not_ready_delay
from exportpipe.orchestrator.http_source import HttpExportSource, parse_retry_after
from exportpipe.orchestrator.settings import OrchestratorSettings
from exportpipe.orchestrator.source import (
    ExportInfo,
    ExportNotReady,
    ExportSource,
    FilePage,
    ListedFile,
    UnknownSource,
    available_sources,
    create_source,
    register_source,
)

__all__ = [
    "ExportInfo",
    "ExportNotReady",
    "ExportSource",
    "FilePage",
    "HttpExportSource",
    "ListedFile",
    "OrchestratorSettings",
    "PageHandler",
    "UnknownSource",
    "available_sources",
    "create_source",
    "not_ready_delay",
    "parse_retry_after",
    "register_source",
]
