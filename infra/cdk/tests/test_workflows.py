"""CI: per-team pull-request checks, one ordered release pipeline, a rollback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
WORKFLOWS = REPO / ".github" / "workflows"
SERVICES = ("orchestrator", "worker")


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def _runs(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for step in _steps(workflow))


PR_CHECKS = ("orchestrator", "worker", "shared")
ALL = (*PR_CHECKS, "release", "rollback")
_SHA = re.compile(r"@[0-9a-f]{40}$")
_DIGEST = re.compile(r"^docker://\S+@sha256:[0-9a-f]{64}$")


def test_pr_checks_per_team_one_release_pipeline_and_a_rollback():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yml")) == sorted(ALL)


@pytest.mark.parametrize("service", SERVICES)
def test_service_checks_are_filtered_to_their_own_paths(service):
    other = next(s for s in SERVICES if s != service)
    workflow = _load(service)
    paths = workflow["on"]["pull_request"]["paths"]
    assert f"services/{service}/**" in paths
    assert f"docker/{service}.Dockerfile" in paths
    assert "libs/common/**" in paths  # the image contains the shared library
    assert not any(other in p for p in paths)
    assert not any(p.startswith(("infra/", "tools/")) for p in paths)


@pytest.mark.parametrize("service", SERVICES)
def test_service_checks_build_their_arm64_image_without_pushing(service):
    workflow = _load(service)
    (build,) = [s["with"] for s in _steps(workflow) if "build-push-action" in s.get("uses", "")]
    assert build["file"] == f"docker/{service}.Dockerfile"
    assert build["context"] == "."
    assert build["platforms"] == "linux/arm64"
    assert build["push"] is False


@pytest.mark.parametrize("name", PR_CHECKS)
def test_only_the_release_pipeline_deploys_on_push(name):
    # Issue 17: separate deploying workflows raced (a reapply could cancel a pending
    # image release; a service could deploy before the shared stack it needs).
    workflow = _load(name)
    assert list(workflow["on"]) == ["pull_request"]
    assert "make deploy" not in _runs(workflow)
    assert "id-token" not in str(workflow)


def test_release_runs_in_order_test_images_shared_orchestrator_worker():
    workflow = _load("release")
    assert list(workflow["on"]) == ["push"]
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "paths" not in workflow["on"]["push"]  # every commit, so nothing is skipped
    assert workflow["concurrency"] == {"group": "release-main", "cancel-in-progress": False}
    jobs = workflow["jobs"]
    assert jobs["images"]["needs"] == "test"
    assert jobs["deploy-shared"]["needs"] == "images"
    assert jobs["deploy-orchestrator"]["needs"] == "deploy-shared"
    assert jobs["deploy-worker"]["needs"] == "deploy-orchestrator"
    deploys = {name: _runs({"jobs": {name: job}}) for name, job in jobs.items() if "deploy" in name}
    assert "make deploy-shared" in deploys["deploy-shared"]
    for service in SERVICES:
        run = deploys[f"deploy-{service}"]
        assert f'make deploy-{service} IMAGE_TAG="$(.ci/image-tag {service})"' in run
        assert 'SHARED_REVISION="$(.ci/shared-revision)"' in run
    builds = [s for s in jobs["images"]["steps"] if "build-push-action" in s.get("uses", "")]
    assert builds[0]["with"]["platforms"] == "linux/arm64"
    assert builds[0]["if"] == "steps.tag.outputs.exists == 'false'"  # immutable ECR tags


def test_worker_release_waits_out_the_drain_bound_and_smoke_runs_the_task():
    from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

    job = _load("release")["jobs"]["deploy-worker"]
    bound = DEFAULT_DEPLOYMENT.worker_scaling.release_bound_minutes
    assert job["timeout-minutes"] >= bound + 15
    names = [step.get("name", step.get("uses", "")) for step in job["steps"]]
    deploy = names.index("Deploy the worker with its image and the shared revision")
    smoke = names.index("Smoke-run the new task definition")
    rollback = names.index("Roll back to the previous image when the smoke run fails")
    assert deploy < smoke < rollback
    assert job["steps"][smoke]["run"] == ".ci/smoke-task ExportPipeWorker exportpipe-worker"
    assert "steps.previous.outputs.tag" in job["steps"][rollback]["run"]


def test_rollback_redeploys_a_given_existing_tag_in_its_own_concurrency_group():
    workflow = _load("rollback")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["service"]["options"] == list(SERVICES)
    assert inputs["image_tag"]["required"] is True
    # Sharing release-main would let a newer release replace a waiting rollback.
    assert workflow["concurrency"]["group"] != "release-main"
    runs = _runs(workflow)
    assert "aws ecr describe-images" in runs
    assert 'make "deploy-$SERVICE" IMAGE_TAG="$IMAGE_TAG"' in runs
    assert ".ci/smoke-task ExportPipeWorker" in runs


@pytest.mark.parametrize("name", ["release", "rollback"])
def test_deployments_take_network_settings_from_committed_context(name):
    workflow = _load(name)
    assert workflow["env"]["EXPORTPIPE_ENVIRONMENT"] == "production"
    text = (WORKFLOWS / f"{name}.yml").read_text()
    for moved in ("EXPORTPIPE_NAT_GATEWAYS", "EXPORTPIPE_VPC_ID", "EXPORTPIPE_OUTPUT_PREFIX"):
        assert moved not in text


@pytest.mark.parametrize("name", ALL)
def test_actions_are_pinned_by_commit_and_permissions_minimal(name):
    workflow = _load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for step in _steps(workflow):
        uses = step.get("uses")
        if uses:
            assert _SHA.search(uses) or _DIGEST.match(uses), uses
    for job in workflow["jobs"].values():
        if "id-token" in job.get("permissions", {}):
            assert job["permissions"] == {"contents": "read", "id-token": "write"}


def test_ci_scripts_exist_and_are_executable():
    for script in ("image-tag", "shared-revision", "smoke-task"):
        path = REPO / ".ci" / script
        assert path.stat().st_mode & 0o111, script


def test_image_tag_is_content_addressed(tmp_path):
    import subprocess

    tag = subprocess.run(
        [str(REPO / ".ci" / "image-tag"), "worker"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{20}", tag)
    again = subprocess.run(
        [str(REPO / ".ci" / "image-tag"), "worker"], capture_output=True, text=True, check=True
    ).stdout.strip()
    orchestrator = subprocess.run(
        [str(REPO / ".ci" / "image-tag"), "orchestrator"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tag == again != orchestrator


@pytest.mark.parametrize("name", ["shared", "release", "rollback"])
def test_make_targets_used_exist(name):
    makefile = (REPO / "Makefile").read_text()
    runs = _runs(_load(name))
    expanded = "\n".join(
        runs.replace("${{ matrix.service }}", s).replace('"deploy-$SERVICE"', f"deploy-{s}")
        for s in SERVICES
    )
    targets = re.findall(r"make \"?([a-z-]+)", expanded)
    assert targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
