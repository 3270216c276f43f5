"""The fault-injecting proxy's own behaviour: resets and lost responses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from exportpipe.testing import Fault, FaultProxy, Request


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=moto_server) as p:
        yield p


def _once(operation: str, fault: Fault) -> Any:
    seen: list[str] = []

    def rule(request: Request) -> Fault | None:
        if request.operation != operation or seen:
            return None
        seen.append(operation)
        return fault

    return rule


def _client(proxy: FaultProxy) -> Any:
    return boto3.client(
        "sqs", endpoint_url=proxy.endpoint, config=Config(retries={"max_attempts": 3})
    )


def _bodies(sqs: Any, url: str) -> list[str]:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [m["Body"] for m in got]


def test_reset_is_not_forwarded(sqs: Any, queue_pair: tuple[str, str], proxy: FaultProxy) -> None:
    proxy.rules.append(_once("SendMessage", Fault(reset=True)))
    _client(proxy).send_message(QueueUrl=queue_pair[0], MessageBody="once")
    assert proxy.faults["reset"] == 1
    assert _bodies(sqs, queue_pair[0]) == ["once"]  # the retry is the only delivery


def test_dropped_response_was_forwarded(
    sqs: Any, queue_pair: tuple[str, str], proxy: FaultProxy
) -> None:
    proxy.rules.append(_once("SendMessage", Fault(drop_response=True)))
    _client(proxy).send_message(QueueUrl=queue_pair[0], MessageBody="twice")
    assert proxy.faults["drop_response"] == 1
    # The first call took effect although the client saw a reset, so its retry duplicates.
    assert _bodies(sqs, queue_pair[0]) == ["twice", "twice"]


def test_head_keeps_the_object_size(s3: Any, proxy: FaultProxy) -> None:
    s3.create_bucket(Bucket="proxy-head")
    s3.put_object(Bucket="proxy-head", Key="k", Body=b"x" * 1234)
    proxied = boto3.client("s3", endpoint_url=proxy.endpoint)
    head = proxied.head_object(Bucket="proxy-head", Key="k")
    assert head["ContentLength"] == 1234
    assert proxied.get_object(Bucket="proxy-head", Key="k")["Body"].read() == b"x" * 1234


def test_latency_proxy_process_counts_and_resets(moto_server: str) -> None:
    import subprocess
    import sys

    with subprocess.Popen(
        [sys.executable, "-m", "exportpipe.testing.proxy", "--upstream", moto_server],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        _drive_latency_proxy(proc)


def _drive_latency_proxy(proc: Any) -> None:
    import json
    import urllib.request

    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        sqs = boto3.client("sqs", endpoint_url=url)
        sqs.list_queues()
        with urllib.request.urlopen(f"{url}/__proxy/stats", timeout=10) as r:
            assert json.loads(r.read()) == {"ListQueues": 1}
        reset = urllib.request.Request(f"{url}/__proxy/reset", method="POST", data=b"")
        with urllib.request.urlopen(reset, timeout=10) as r:
            assert json.loads(r.read()) == {}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
