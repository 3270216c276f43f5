"""The shared stack's cluster, repositories, topics, secret and outputs."""

from __future__ import annotations

import json

import pytest

from exportpipe.infra.image_repository import REPOSITORY_NAMES

SHARED = "ExportPipeShared"


def test_cluster_has_fargate_providers_and_container_insights(synth):
    cluster = synth.one(SHARED, "AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]
    providers = synth.one(SHARED, "AWS::ECS::ClusterCapacityProviderAssociations")
    assert sorted(providers["CapacityProviders"]) == ["FARGATE", "FARGATE_SPOT"]


@pytest.mark.parametrize("service", ["orchestrator", "worker"])
def test_image_repository(synth, service):
    (repo,) = [
        r
        for r in synth.resources(SHARED, "AWS::ECR::Repository").values()
        if r["Properties"]["RepositoryName"] == REPOSITORY_NAMES[service]
    ]
    props = repo["Properties"]
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repo["DeletionPolicy"] == "Retain"


def test_events_topic_is_encrypted_and_tls_only(synth):
    topics = synth.resources(SHARED, "AWS::SNS::Topic")
    (events,) = [n for n in topics if n.startswith("EventsTopic")]
    key = synth.text(topics[events]["Properties"]["KmsMasterKeyId"])
    assert key.endswith(":alias/aws/sns")
    for name in topics:
        (policy,) = [
            p["Properties"]
            for p in synth.resources(SHARED, "AWS::SNS::TopicPolicy").values()
            if p["Properties"]["Topics"] == [{"Ref": name}]
        ]
        # TLS only; the alarm topic also lets EventBridge publish fleet events.
        statements = policy["PolicyDocument"]["Statement"]
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert [s["Condition"] for s in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
        allowed = {s.get("Sid") for s in statements if s["Effect"] == "Allow"}
        assert allowed <= {"EventBridgePublishesFleetEvents"}


def test_api_token_secret_is_retained(synth):
    (secret,) = synth.resources(SHARED, "AWS::SecretsManager::Secret").values()
    assert secret["DeletionPolicy"] == "Retain"
    assert "SecretString" not in secret["Properties"]


def test_named_outputs_the_service_stacks_read(synth):
    outputs = synth.templates[SHARED]["Outputs"]
    for name in (
        "OutputBucketName",
        "ClusterName",
        "RequestsQueueUrl",
        "JobsQueueUrl",
        "OrchestratorRepositoryUri",
        "WorkerRepositoryUri",
    ):
        assert name in outputs
    assert synth.text(outputs["OutputBucketName"]["Value"]).startswith("<OutputBucket")
    assert synth.text(outputs["ClusterName"]["Value"]).startswith("<Cluster")


def test_vpc_keeps_s3_and_dynamodb_traffic_on_gateway_endpoints(synth):
    endpoints = synth.resources(SHARED, "AWS::EC2::VPCEndpoint")
    services = sorted(synth.text(e["Properties"]["ServiceName"]) for e in endpoints.values())
    assert [s.rsplit(".", 1)[-1] for s in services] == ["dynamodb", "s3"]
    assert synth.resources(SHARED, "AWS::EC2::FlowLog")


def test_service_stacks_depend_on_the_shared_stack_only(synth):
    manifest = synth.outdir / "manifest.json"
    artifacts = json.loads(manifest.read_text())["artifacts"]
    for stack in ("ExportPipeOrchestrator", "ExportPipeWorker"):
        deps = [d for d in artifacts[stack]["dependencies"] if not d.endswith(".assets")]
        assert deps == [SHARED]
    assert not [d for d in artifacts[SHARED].get("dependencies", []) if not d.endswith(".assets")]
