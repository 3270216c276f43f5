"""The output bucket and its access-log bucket."""

from __future__ import annotations

SHARED = "ExportPipeShared"


def _bucket(synth, prefix):
    (name,) = [n for n in synth.resources(SHARED, "AWS::S3::Bucket") if n.startswith(prefix)]
    return name, synth.templates[SHARED]["Resources"][name]


def _policy(synth, bucket_name):
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for p in synth.resources(SHARED, "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_name}
    ]
    return policy


def test_output_bucket_is_private_encrypted_versioned_and_retained(synth):
    _, bucket = _bucket(synth, "OutputBucket")
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    ]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["DeletionPolicy"] == "Retain"


def test_lifecycle_aborts_incomplete_uploads_and_expires_old_versions(synth):
    _, bucket = _bucket(synth, "OutputBucket")
    rules = {r["Id"]: r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }
    assert all(r["Status"] == "Enabled" for r in rules.values())
    # The one rule that expires current objects is held to checkpoints by their tag
    # (the tag the worker writes them with): the exports are the product.
    expiring = [r for r in rules.values() if "ExpirationInDays" in r]
    assert expiring == [rules["expire-stale-checkpoints"]]
    assert expiring[0]["ExpirationInDays"] == 2
    assert expiring[0]["TagFilters"] == [{"Key": "exportpipe-object", "Value": "checkpoint"}]
    assert "Prefix" not in expiring[0]


def test_server_access_logs_go_to_the_log_bucket(synth):
    logs_name, logs = _bucket(synth, "OutputAccessLogs")
    _, bucket = _bucket(synth, "OutputBucket")
    assert bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": logs_name
    }
    statements = _policy(synth, logs_name)["Statement"]
    delivery = [
        s for s in statements if s.get("Principal") == {"Service": "logging.s3.amazonaws.com"}
    ]
    (allow,) = delivery
    assert allow["Action"] == "s3:PutObject"
    assert "aws:SourceAccount" in allow["Condition"]["StringEquals"]
    assert logs["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 90


def test_both_buckets_deny_plain_http(synth):
    for prefix in ("OutputBucket", "OutputAccessLogs"):
        name, _ = _bucket(synth, prefix)
        deny = [s for s in _policy(synth, name)["Statement"] if s["Effect"] == "Deny"]
        (statement,) = deny
        assert statement["Action"] == "s3:*"
        assert statement["Principal"] == {"AWS": "*"}
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        resources = [str(r) for r in statement["Resource"]]
        assert len(resources) == 2  # the bucket and every object in it
        assert any("/*" in r for r in resources)


def test_output_bucket_policy_grants_nobody_anything(synth):
    name, _ = _bucket(synth, "OutputBucket")
    assert all(s["Effect"] == "Deny" for s in _policy(synth, name)["Statement"])


def test_bucket_shape_with_cdk_assertions(synth):
    from aws_cdk.assertions import Match

    template = synth.template(SHARED)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        Match.object_like(
            {
                "VersioningConfiguration": {"Status": "Enabled"},
                "LoggingConfiguration": Match.object_like({"LogFilePrefix": "output/"}),
            }
        ),
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            )
        },
    )
