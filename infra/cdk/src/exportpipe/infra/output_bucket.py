"""The output bucket the workers write exports into."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from exportpipe.common.layout import CHECKPOINT_EXPIRY_DAYS, CHECKPOINT_TAG
from exportpipe.infra.nag import acknowledge

__all__ = ["OutputBucket"]


class OutputBucket(Construct):
    """Encrypted, private, TLS-only, versioned bucket with server access logs.

    Versioning is on with noncurrent versions expiring after
    ``noncurrent_version_days``: workers write each key once (``If-None-Match``), so
    versioning costs nothing on the normal path, while an operator's or a re-run's
    overwrite or delete stays recoverable for that long (see ``infra/cdk/README.md``).
    Incomplete multipart uploads (a worker killed mid-upload) are aborted after a day so
    their parts stop costing storage, and a resume checkpoint nobody deleted (tagged
    ``CHECKPOINT_TAG``) expires ``CHECKPOINT_EXPIRY_DAYS`` after its last write; no rule
    expires any other current object.

    Attributes:
        bucket: the output bucket.
        access_logs: the bucket receiving its server access logs.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        noncurrent_version_days: int = 30,
        access_log_days: int = 90,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # Server access log delivery supports SSE-S3 only, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(access_log_days))
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log bucket; logging it into itself would loop.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="output/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    # A checkpoint a killed attempt's late write left behind (ADR 0020);
                    # the tag keeps the rule off everything else, exports above all.
                    id="expire-stale-checkpoints",
                    tag_filters=dict([CHECKPOINT_TAG]),
                    expiration=Duration.days(CHECKPOINT_EXPIRY_DAYS),
                ),
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    expired_object_delete_marker=True,
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
