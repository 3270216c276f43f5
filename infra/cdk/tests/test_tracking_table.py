"""The export tracking table."""

from __future__ import annotations

from exportpipe.common.tracking import ACTIVE_INDEX


def test_table_shape_matches_the_tracker(synth):
    (table,) = synth.resources("ExportPipeShared", "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "pk", "AttributeType": "S"} in props["AttributeDefinitions"]
    assert {"AttributeName": "sk", "AttributeType": "S"} in props["AttributeDefinitions"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == ACTIVE_INDEX
    assert index["KeySchema"] == [
        {"AttributeName": "active", "KeyType": "HASH"},
        {"AttributeName": "last_activity", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert {"AttributeName": "last_activity", "AttributeType": "N"} in props["AttributeDefinitions"]
