"""Fixtures every test suite in the repo can use: one real moto server per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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
