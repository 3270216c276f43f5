"""The local stack's moto server keeps concurrent DynamoDB counter updates exact."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import boto3
import pytest

from exportpipe.common.tracking import ExportTracker
from exportpipe.tools.local import down, up

pytestmark = pytest.mark.slow

THREADS, FILES_EACH, TRIALS = 6, 15, 4


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("motoserver")
    yield up(state).state.endpoint
    down(state)


def _dynamodb(endpoint: str) -> object:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_concurrent_outcomes_are_all_counted(endpoint: str) -> None:
    """Workers record files of one export at once; no count may be lost.

    On plain ``moto.server`` this loses an increment in about half the trials.
    """
    table = ExportTracker(_dynamodb(endpoint), "race")
    table.create_table()
    total = THREADS * FILES_EACH
    for trial in range(TRIALS):
        export_id = f"exp-{trial}"
        table.record_page(export_id, 0, total, is_last=True, bucket="b", prefix="p/")
        start = threading.Barrier(THREADS)

        def record(
            worker: int, export_id: str = export_id, start: threading.Barrier = start
        ) -> None:
            tracker = ExportTracker(_dynamodb(endpoint), "race")
            start.wait()
            for n in range(FILES_EACH):
                tracker.record_file(
                    export_id, f"w{worker}-{n}", "done", size=3, detail="k", bucket="b", prefix="p/"
                )

        threads = [threading.Thread(target=record, args=(w,)) for w in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = table.get(export_id)
        assert state is not None
        assert (state.files_done, state.files_outstanding, state.bytes) == (total, 0, 3 * total)


def test_sqs_long_polls_are_not_serialized(endpoint: str) -> None:
    """Two 2-second long polls on empty queues overlap: only DynamoDB is serialized."""
    import time

    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.create_queue(QueueName="poll")["QueueUrl"]
    started = time.monotonic()
    threads = [
        threading.Thread(target=sqs.receive_message, kwargs={"QueueUrl": url, "WaitTimeSeconds": 2})
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 3.5
