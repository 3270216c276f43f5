from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis.provisional import urls

from exportpipe.common.observability import Metrics, get_logger, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://host/a/b.gz?X-Amz-Signature=abc", "https://host/a/b.gz"),
        ("https://user:pw@host:8443/p#frag", "https://host:8443/p"),
        ("s3://bucket/key?versionId=1", "s3://bucket/key"),
        ("http://[::1]:80/x?y=1", "http://[::1]:80/x"),
        ("http://[::1]/x", "http://[::1]/x"),
        ("http://[fe80::1]:0/x", "http://[fe80::1]:0/x"),  # port 0 kept, as for a name
        ("http://h:0/x", "http://h:0/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@given(urls())
def test_redact_url_keeps_where_and_drops_the_rest(url: str) -> None:
    # hypothesis's URL strategy writes the URLs; the query and fragment it adds must go.
    before, after = urlsplit(url), urlsplit(redact_url(url))
    assert (after.scheme, after.hostname, after.port, after.path) == (
        before.scheme,
        before.hostname,
        before.port,
        before.path,
    )
    assert (after.query, after.fragment, after.username, after.password) == ("", "", None, None)


def test_redact_text_masks_tokens_and_queries() -> None:
    text = "GET https://h/x?sig=SECRET1 Authorization: Bearer SECRET2 token=SECRET3"
    out = redact_text(text)
    assert "SECRET" not in out
    assert "https://h/x" in out


def test_logger_never_prints_query_or_token(capsys: pytest.CaptureFixture[str]) -> None:
    log = get_logger("test-redaction")
    log.info(
        "fetching %s with %s",
        "https://files.example.com/a.gz?X-Amz-Signature=SECRETSIG",
        "Bearer SECRETTOKEN",
        extra={"url": "https://files.example.com/b.gz?token=SECRETEXTRA"},
    )
    # urllib3 logs full request paths at DEBUG: it is held at WARNING.
    assert logging.getLogger("urllib3").level == logging.WARNING
    out = capsys.readouterr().out
    assert "SECRET" not in out
    line = json.loads(out.splitlines()[0])
    assert line["message"] == "fetching https://files.example.com/a.gz with Bearer ***"
    assert line["url"] == "https://files.example.com/b.gz"


def test_metrics_aggregate_and_flush_emf(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = Metrics(namespace="ExportPipe", service="test")
    metrics.add("JobsDone")
    metrics.add("JobsDone")
    metrics.add("BytesUploaded", 2048, "Bytes", queue="jobs")
    assert metrics.snapshot() == {"JobsDone": 2.0, "BytesUploaded": 2048.0}
    metrics.flush()
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {d["_aws"]["CloudWatchMetrics"][0]["Namespace"] for d in docs} == {"ExportPipe"}
    by_name = {k: v for d in docs for k, v in d.items() if k in {"JobsDone", "BytesUploaded"}}
    assert by_name == {"JobsDone": [2.0], "BytesUploaded": [2048.0]}
    assert metrics.snapshot() == {}
