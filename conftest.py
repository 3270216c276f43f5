"""Fixtures every test suite in the repo can use: one real moto server per session."""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from exportpipe.testing import MotoServer, create_queue_pair

# Tests never reach real AWS: fixed fake credentials and region for every client.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_DEFAULT_REGION"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ExportPipe")


ROOT = Path(__file__).resolve().parent
# The infra tests share one CDK synthesis (``synth``, a session fixture: ~15 s of CPU),
# so under pytest-xdist they all go to one worker. ``test_app.py`` runs its own synth
# in a subprocess and uses no shared fixture, so it may run anywhere.
_SHARED_SESSION_DIRS = ("infra/cdk/tests/",)
_OWN_SESSION_FILES = ("infra/cdk/tests/test_app.py",)
_WIDE_SCOPE = re.compile(r"""scope=["'](module|package|class)["']""")


@functools.cache
def _has_wide_fixture(path: str) -> bool:
    """Whether a test file, or a conftest.py above it, defines a module/class-scoped fixture."""
    file = ROOT / path
    sources = [file, *(d / "conftest.py" for d in file.parents if d.is_relative_to(ROOT))]
    return any(s.is_file() and _WIDE_SCOPE.search(s.read_text()) for s in sources)


def _work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: the test itself unless it shares a fixture.

    Tests of a file with a module- or class-scoped fixture (a local stack, a fault run)
    stay together, so the fixture is built once; the infra tests of one synthesis too.
    """
    path = nodeid.split("::", 1)[0]
    for directory in _SHARED_SESSION_DIRS:
        if path.startswith(directory) and path not in _OWN_SESSION_FILES:
            return directory
    return path if _has_wide_fixture(path) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with work units from :func:`_work_unit`.

    Marks cannot say this: ``--dist loadgroup`` reads ``xdist_group`` marks through the
    node ids xdist 3.8 rewrites, and pytest 9 ignores the rewrite.
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, hand out the slow and end-to-end tests first.

    Work units are handed out in the order of their first test (``make test`` turns off
    xdist's reordering by size), so this starts the long ones early and no worker is
    left running one alone at the end. Serial runs keep the collection order. The sort
    is stable: every worker sees the same order.
    """
    if hasattr(config, "workerinput"):
        items.sort(key=lambda i: not any(i.get_closest_marker(m) for m in ("slow", "e2e")))


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a moto server process; also exported as ``AWS_ENDPOINT_URL``."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log_file=log) as server:
        previous = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        yield server.endpoint
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous


@pytest.fixture
def sqs(moto_server: str) -> Any:
    """A boto3 SQS client on the moto server."""
    return boto3.client("sqs", endpoint_url=moto_server)


@pytest.fixture
def s3(moto_server: str) -> Any:
    """A boto3 S3 client on the moto server."""
    return boto3.client("s3", endpoint_url=moto_server)


@pytest.fixture
def queue_pair(sqs: Any) -> tuple[str, str]:
    """A fresh queue and its DLQ (redrive after 5 receives); returns both URLs."""
    return create_queue_pair(sqs, f"q-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, empty bucket."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
