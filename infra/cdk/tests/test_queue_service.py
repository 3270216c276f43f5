"""Task definitions and ECS services of both stacks, against the sizing module."""

from __future__ import annotations

import pytest

from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

ORCHESTRATOR, WORKER = "ExportPipeOrchestrator", "ExportPipeWorker"
SIZING = {ORCHESTRATOR: DEFAULT_DEPLOYMENT.orchestrator, WORKER: DEFAULT_DEPLOYMENT.worker}
COMMAND = {ORCHESTRATOR: "exportpipe-orchestrator", WORKER: "exportpipe-worker"}


def _task(synth, stack):
    return synth.one(stack, "AWS::ECS::TaskDefinition")


def _container(synth, stack):
    (container,) = _task(synth, stack)["ContainerDefinitions"]
    return container


def test_task_sizes_are_the_issue_numbers_and_come_from_sizing(synth):
    # Orchestrator: 0.5 vCPU needs >= 1 GiB on Fargate; worker 2 vCPU / 4 GiB.
    assert (_task(synth, ORCHESTRATOR)["Cpu"], _task(synth, ORCHESTRATOR)["Memory"]) == (
        "512",
        "1024",
    )
    assert (_task(synth, WORKER)["Cpu"], _task(synth, WORKER)["Memory"]) == ("2048", "4096")
    for stack, sizing in SIZING.items():
        assert _task(synth, stack)["Cpu"] == str(sizing.cpu_units)
        assert _task(synth, stack)["Memory"] == str(sizing.memory_mib)


def test_worker_has_the_ephemeral_storage_for_zip_spooling(synth):
    storage = _task(synth, WORKER)["EphemeralStorage"]["SizeInGiB"]
    assert storage == DEFAULT_DEPLOYMENT.worker.ephemeral_storage_gib
    assert storage > 20
    # The orchestrator keeps Fargate's free 20 GiB (the property only takes 21-200).
    assert "EphemeralStorage" not in _task(synth, ORCHESTRATOR)


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_tasks_are_arm64_fargate(synth, stack):
    task = _task(synth, stack)
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    # FARGATE_SPOT runs ARM64 tasks on platform version 1.4.0 or later.
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"


def test_worker_runs_on_spot_after_an_on_demand_base(synth):
    service = synth.one(WORKER, "AWS::ECS::Service")
    assert service["CapacityProviderStrategy"] == [
        {
            "CapacityProvider": "FARGATE",
            "Base": DEFAULT_DEPLOYMENT.worker.on_demand_base,
            "Weight": 0,
        },
        {"CapacityProvider": "FARGATE_SPOT", "Weight": 1},
    ]
    assert "LaunchType" not in service


def test_orchestrator_runs_on_demand_only(synth):
    service = synth.one(ORCHESTRATOR, "AWS::ECS::Service")
    assert service["CapacityProviderStrategy"] == [{"CapacityProvider": "FARGATE", "Weight": 1}]


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_stop_timeout_leaves_room_for_graceful_shutdown(synth, stack):
    stop = _container(synth, stack)["StopTimeout"]
    assert stop == SIZING[stack].stop_timeout_seconds
    # Grace plus the consumer's release wait (15 s) must end before SIGKILL.
    assert DEFAULT_DEPLOYMENT.shutdown_grace_seconds + 15 < stop
    if stack == WORKER:
        assert stop == 120  # Fargate's maximum, the length of a Spot interruption warning


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_container_runs_the_console_script_hardened_with_awslogs(synth, stack):
    container = _container(synth, stack)
    assert container["Command"] == [COMMAND[stack]]
    assert container["Essential"] is True
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"] == [
        {"ContainerPath": "/tmp", "ReadOnly": False, "SourceVolume": "scratch"}
    ]
    logging = container["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["mode"] == "non-blocking"
    assert synth.text(logging["Options"]["awslogs-group"]).startswith("<")


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_image_comes_from_the_image_tag_parameter(synth, stack):
    parameter = synth.templates[stack]["Parameters"]["ImageTag"]
    assert parameter["Type"] == "String"
    assert "Default" not in parameter
    image = synth.text(_container(synth, stack)["Image"])
    assert image.endswith(f"/exportpipe/{stack.removeprefix('ExportPipe').lower()}:<ImageTag>")


def test_orchestrator_environment_and_secret(synth):
    container = _container(synth, ORCHESTRATOR)
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert set(env) == {
        "EXPORTPIPE_REQUESTS_QUEUE_URL",
        "EXPORTPIPE_REQUESTS_DLQ_URL",
        "EXPORTPIPE_JOBS_QUEUE_URL",
        "EXPORTPIPE_BUCKET",
        "EXPORTPIPE_OUTPUT_PREFIX",
        "EXPORTPIPE_TABLE",
        "EXPORTPIPE_EVENTS_TOPIC_ARN",
        "EXPORTPIPE_EXPORT_API_URL",
        "EXPORTPIPE_CONCURRENCY",
        "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS",
    }
    assert synth.text(env["EXPORTPIPE_REQUESTS_QUEUE_URL"]).startswith("<RequestsQueue")
    assert synth.text(env["EXPORTPIPE_REQUESTS_DLQ_URL"]).startswith("<RequestsDlq")
    assert synth.text(env["EXPORTPIPE_JOBS_QUEUE_URL"]).startswith("<JobsQueue")
    assert env["EXPORTPIPE_EXPORT_API_URL"] == "https://export-api.example.com/v1"
    assert env["EXPORTPIPE_CONCURRENCY"] == str(DEFAULT_DEPLOYMENT.orchestrator.concurrency)
    (secret,) = container["Secrets"]
    assert secret["Name"] == "EXPORTPIPE_EXPORT_API_TOKEN"
    assert synth.text(secret["ValueFrom"]).startswith("<ExportApiTokenSecret")


def test_worker_environment_has_no_secret(synth):
    container = _container(synth, WORKER)
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert set(env) == {
        "EXPORTPIPE_JOBS_QUEUE_URL",
        "EXPORTPIPE_JOBS_DLQ_URL",
        "EXPORTPIPE_BUCKET",
        "EXPORTPIPE_OUTPUT_PREFIX",
        "EXPORTPIPE_TABLE",
        "EXPORTPIPE_EVENTS_TOPIC_ARN",
        "EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS",
        "EXPORTPIPE_CONCURRENCY",
        "EXPORTPIPE_JOB_BUDGET_BYTES",
        "EXPORTPIPE_SHUTDOWN_GRACE_SECONDS",
    }
    assert env["EXPORTPIPE_JOB_BUDGET_BYTES"] == str(DEFAULT_DEPLOYMENT.worker.job_budget_bytes)
    assert env["EXPORTPIPE_DOWNLOAD_ALLOWED_HOSTS"] == "files.example.com,.cdn.example.com"
    assert env["EXPORTPIPE_CONCURRENCY"] == str(DEFAULT_DEPLOYMENT.worker.concurrency)
    assert synth.text(env["EXPORTPIPE_BUCKET"]).startswith("<OutputBucket")
    assert synth.text(env["EXPORTPIPE_TABLE"]).startswith("<TrackingTable")
    assert "Secrets" not in container


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_no_token_or_secret_in_plain_environment(synth, stack):
    for entry in _container(synth, stack)["Environment"]:
        assert "TOKEN" not in entry["Name"]
        assert "SECRET" not in entry["Name"]


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_scalable_target_bounds_come_from_sizing(synth, stack):
    target = synth.one(stack, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (
        SIZING[stack].min_tasks,
        SIZING[stack].max_tasks,
    )
    # Autoscaling owns the task count: a deploy must not reset it.
    assert "DesiredCount" not in synth.one(stack, "AWS::ECS::Service")


@pytest.mark.parametrize("stack", [ORCHESTRATOR, WORKER])
def test_tasks_accept_no_inbound_traffic(synth, stack):
    group = synth.one(stack, "AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in group
    service = synth.one(stack, "AWS::ECS::Service")
    assert service["AvailabilityZoneRebalancing"] == "DISABLED"
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }


def test_worker_service_shape_with_cdk_assertions(synth):
    from aws_cdk.assertions import Match

    template = synth.template(WORKER)
    template.resource_count_is("AWS::ECS::Service", 1)
    template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": "2048",
            "Memory": "4096",
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Command": ["exportpipe-worker"],
                        "StopTimeout": 120,
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )
    template.has_resource_properties(
        "AWS::ECS::Service",
        {
            "CapacityProviderStrategy": [
                Match.object_like({"CapacityProvider": "FARGATE", "Base": 1}),
                Match.object_like({"CapacityProvider": "FARGATE_SPOT"}),
            ]
        },
    )
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget",
        {"MinCapacity": 0, "MaxCapacity": DEFAULT_DEPLOYMENT.worker.max_tasks},
    )
