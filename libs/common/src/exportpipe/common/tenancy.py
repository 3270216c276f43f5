"""Which tenant a queued message belongs to: its SQS ``MessageGroupId``.

SQS 1 and SQS 2 are standard queues shared by every tenant. Sending each message with
``MessageGroupId`` = its tenant turns them into *fair queues* (SQS, July 2025): while
one tenant holds a disproportionate share of the consumers (a "noisy" group), SQS
delivers the other tenants' messages first, with no consumer change. See ADR 0018.

The group is the export's ``tenant`` when the request names one, else the export id,
so an untagged whale export is still one group and cannot starve everyone else.
"""

from __future__ import annotations

import hashlib

import orjson

from exportpipe.common.schemas import DownloadJob, ExportRequested, is_valid_id

__all__ = ["MAX_GROUP_ID_LENGTH", "group_id_for", "group_id_for_body", "message_group_id"]

MAX_GROUP_ID_LENGTH = 128
"""SQS's limit on ``MessageGroupId``. The schemas' id rule keeps ids within it (at most
128 characters); longer keys (callers outside that rule) are still bounded below."""

_DIGEST_CHARS = 32


def group_id_for(export_id: str, tenant: str | None) -> str:
    """The ``MessageGroupId`` for a message of ``export_id`` owned by ``tenant``.

    Ids that already fit are used as they are (readable in the console and in
    CloudWatch). A longer one keeps its first characters and ends with ``~`` and 32 hex
    digits of its sha256, so two long ids that share a prefix stay distinct groups. The
    ids' character set (``[A-Za-z0-9._:-]``, enforced by the schemas) is a subset of
    what SQS accepts.
    """
    key = tenant or export_id
    if len(key) <= MAX_GROUP_ID_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:_DIGEST_CHARS]
    return f"{key[: MAX_GROUP_ID_LENGTH - _DIGEST_CHARS - 1]}~{digest}"


def message_group_id(message: ExportRequested | DownloadJob) -> str:
    """The ``MessageGroupId`` ``message`` is sent with (see :func:`group_id_for`)."""
    return group_id_for(message.export_id, message.tenant)


def group_id_for_body(body: str | bytes) -> str | None:
    """The group of an already-encoded body, or ``None`` if it names no valid export.

    For sending a body back as it is (a DLQ redrive) without decoding it against a
    schema: a dead letter may be malformed, and still goes back, only without a group.
    """
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    export_id, tenant = raw.get("export_id"), raw.get("tenant")
    if not isinstance(export_id, str) or not is_valid_id(export_id):
        return None
    valid_tenant = isinstance(tenant, str) and is_valid_id(tenant)
    return group_id_for(export_id, tenant if valid_tenant else None)
