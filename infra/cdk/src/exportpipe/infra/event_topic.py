"""The SNS topic on which workers announce ``ExportCompleted`` events."""

from __future__ import annotations

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

__all__ = ["EventTopic"]


class EventTopic(Construct):
    """A TLS-only SNS topic encrypted with the AWS-managed ``aws/sns`` key.

    The managed key's policy lets any principal of the account use it through SNS, so
    publishers need ``sns:Publish`` only, never a KMS grant.

    Attributes:
        topic: the topic.
    """

    def __init__(self, scope: Construct, construct_id: str, *, display_name: str) -> None:
        super().__init__(scope, construct_id)
        managed_key = kms.Alias.from_alias_name(self, "SnsManagedKey", "alias/aws/sns")
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=display_name,
            master_key=managed_key,
            enforce_ssl=True,
        )
