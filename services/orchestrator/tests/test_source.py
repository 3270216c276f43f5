"""The ExportSource plug-in registry."""

from __future__ import annotations

import pytest

from exportpipe.orchestrator.http_source import HttpExportSource
from exportpipe.orchestrator.settings import OrchestratorSettings
from exportpipe.orchestrator.source import (
    ExportInfo,
    ExportSource,
    FilePage,
    ListedFile,
    UnknownSource,
    available_sources,
    create_source,
    register_source,
)


def settings(source: str) -> OrchestratorSettings:
    return OrchestratorSettings(
        bucket="bucket",
        requests_queue_url="http://q/requests",
        requests_dlq_url="http://q/requests-dlq",
        jobs_queue_url="http://q/jobs",
        export_api_url="https://api.example.com",
        export_api_token="t",  # type: ignore[arg-type]
        export_source=source,
    )


class StaticSource(ExportSource):
    """A vendor with a fixed single-page listing: what a plug-in has to provide."""

    def get_export(self, export_id: str) -> ExportInfo:
        return ExportInfo(export_id=export_id, status="ready", file_count=1)

    def list_files(self, export_id: str, *, cursor: str | None, limit: int) -> FilePage:
        return FilePage(
            files=(ListedFile(file_id="a", name="a.bin", url="https://cdn.example.com/a"),),
            next_cursor=None,
        )


def test_builtin_http_source_is_the_default() -> None:
    assert "http-v1" in available_sources()
    source = create_source(settings("http-v1"))
    assert isinstance(source, HttpExportSource)
    source.close()


def test_a_registered_plugin_is_created_by_name() -> None:
    register_source("static-test")(lambda _settings: StaticSource())
    source = create_source(settings("static-test"))
    assert isinstance(source, StaticSource)
    assert source.get_export("x").status == "ready"
    assert "static-test" in available_sources()


def test_unknown_source_names_the_choices() -> None:
    with pytest.raises(UnknownSource, match=r"EXPORTPIPE_EXPORT_SOURCE='nope'.*http-v1"):
        create_source(settings("nope"))


def test_the_builtin_source_is_an_entry_point_not_an_import_side_effect() -> None:
    from importlib.metadata import entry_points

    from exportpipe.orchestrator.http_source import http_v1
    from exportpipe.orchestrator.source import ENTRY_POINT_GROUP

    [entry] = entry_points(group=ENTRY_POINT_GROUP, name="http-v1")
    assert entry.load() is http_v1
