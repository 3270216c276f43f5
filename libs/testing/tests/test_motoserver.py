"""The test moto server loses no SQS message under concurrent sends and deletes."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import boto3


def test_concurrent_sends_and_deletes_lose_nothing(moto_server: str, sqs: Any) -> None:
    url = sqs.create_queue(QueueName=f"stress-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    producers, batches = 4, 25
    expected = {f"{p}-{b}-{i}" for p in range(producers) for b in range(batches) for i in range(10)}
    received: set[str] = set()
    done = threading.Event()

    def produce(p: int) -> None:
        client = boto3.client("sqs")
        for b in range(batches):
            client.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": f"{p}-{b}-{i}"} for i in range(10)],
            )

    def drain() -> None:
        client = boto3.client("sqs")
        while not (done.is_set() and len(received) >= len(expected)):
            got = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if not got and done.is_set():
                return
            for m in got:
                received.add(m["Body"])
            if got:
                client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )

    drainers = [threading.Thread(target=drain) for _ in range(4)]
    senders = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in (*drainers, *senders):
        t.start()
    for t in senders:
        t.join()
    done.set()
    for t in drainers:
        t.join(timeout=60)
    assert received == expected
