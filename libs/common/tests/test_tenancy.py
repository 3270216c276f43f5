"""The tenant's message group: readable when it fits, bounded and distinct when not."""

from __future__ import annotations

import re

from exportpipe.common.schemas import ExportRequested, encode
from exportpipe.common.tenancy import (
    MAX_GROUP_ID_LENGTH,
    group_id_for,
    group_id_for_body,
    message_group_id,
)

# What SQS accepts in MessageGroupId: 1-128 alphanumeric or punctuation characters.
_SQS_GROUP = re.compile(r"^[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,128}$")


def test_tenant_else_export_id() -> None:
    assert group_id_for("exp-1", "acme") == "acme"
    assert group_id_for("exp-1", None) == "exp-1"
    assert message_group_id(ExportRequested(export_id="exp-2", tenant="t.1:a")) == "t.1:a"
    assert message_group_id(ExportRequested(export_id="exp-2")) == "exp-2"


def test_long_ids_are_bounded_and_stay_distinct() -> None:
    a = group_id_for("e", "x" * 256)
    b = group_id_for("e", "x" * 255 + "y")
    assert a != b
    for group in (a, b, group_id_for("e" * 128, None), group_id_for("e" * 129, None)):
        assert _SQS_GROUP.match(group), group
        assert len(group) <= MAX_GROUP_ID_LENGTH
    assert group_id_for("e" * 128, None) == "e" * 128
    assert group_id_for("e" * 129, None) != "e" * 128
    assert group_id_for("e", "x" * 256) == a  # deterministic


def test_group_of_an_encoded_body() -> None:
    assert group_id_for_body(encode(ExportRequested(export_id="e1", tenant="acme"))) == "acme"
    assert group_id_for_body(encode(ExportRequested(export_id="e1"))) == "e1"
    assert group_id_for_body('{"export_id": "e1", "tenant": "bad tenant!"}') == "e1"
    # The id rule is matched whole: "$" alone would also accept a trailing newline,
    # which SQS refuses in a MessageGroupId.
    assert group_id_for_body('{"export_id": "e1", "tenant": "acme\\n"}') == "e1"
    for body in (
        "{not json",
        "[1]",
        '{"export_id": 3}',
        '{"export_id": "a b"}',
        "{}",
        '{"export_id": "e1\\n"}',
    ):
        assert group_id_for_body(body) is None
