"""The DynamoDB transaction patch keeps moto's all-or-nothing result."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from exportpipe.testing.moto_patches import patch_dynamodb

TABLE = "t"


@pytest.fixture
def table() -> Any:
    global TABLE  # one fresh table per test: moto's state may be shared by other tests
    TABLE = f"t-{uuid.uuid4().hex[:8]}"
    patch_dynamodb()
    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
        db.put_item(TableName=TABLE, Item={"pk": {"S": "e"}, "sk": {"S": "META"}, "n": {"N": "1"}})
        yield db


def _item(db: Any, sk: str) -> dict[str, Any] | None:
    return db.get_item(TableName=TABLE, Key={"pk": {"S": "e"}, "sk": {"S": sk}}).get("Item")


def _transact(db: Any, *, marker: str, condition: str) -> None:
    db.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": {"pk": {"S": "e"}, "sk": {"S": marker}},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": "e"}, "sk": {"S": "META"}},
                    "UpdateExpression": "ADD n :one",
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":max": {"N": "1"}},
                }
            },
        ]
    )


def test_a_refused_transaction_leaves_every_item_as_it_was(table: Any) -> None:
    # The Put lands first in moto's loop; the Update's condition then fails.
    with pytest.raises(ClientError, match="TransactionCanceled"):
        _transact(table, marker="FILE#a", condition="n > :max")
    assert _item(table, "FILE#a") is None
    assert _item(table, "META") == {"pk": {"S": "e"}, "sk": {"S": "META"}, "n": {"N": "1"}}


def test_a_transaction_that_passes_applies_both_items(table: Any) -> None:
    _transact(table, marker="FILE#a", condition="n <= :max")
    assert _item(table, "FILE#a") is not None
    assert _item(table, "META")["n"] == {"N": "2"}  # type: ignore[index]
    with pytest.raises(ClientError, match="TransactionCanceled"):
        _transact(table, marker="FILE#a", condition="n > :max")  # marker exists
    assert _item(table, "META")["n"] == {"N": "2"}  # type: ignore[index]
