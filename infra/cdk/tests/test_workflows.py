"""Per-team CI workflows: each service's changes build and release only its own image."""

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


def test_one_workflow_per_service_and_one_for_shared_code():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yml")) == ["orchestrator", "shared", "worker"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_workflow_is_filtered_to_its_own_paths(service):
    other = next(s for s in SERVICES if s != service)
    workflow = _load(service)
    for event in ("push", "pull_request"):
        paths = workflow["on"][event]["paths"]
        assert f"services/{service}/**" in paths
        assert f"docker/{service}.Dockerfile" in paths
        assert "libs/common/**" in paths  # the image contains the shared library
        assert not any(other in p for p in paths)
        assert not any(p.startswith(("infra/", "tools/")) for p in paths)
    assert workflow["on"]["push"]["branches"] == ["main"]


@pytest.mark.parametrize("service", SERVICES)
def test_service_workflow_builds_and_deploys_only_its_service(service):
    other = next(s for s in SERVICES if s != service)
    workflow = _load(service)
    builds = [s["with"] for s in _steps(workflow) if "build-push-action" in s.get("uses", "")]
    (build,) = builds
    assert build["file"] == f"docker/{service}.Dockerfile"
    assert build["context"] == "."
    runs = _runs(workflow)
    assert f"make deploy-{service} IMAGE_TAG=" in runs
    assert "deploy-shared" not in runs
    assert other not in runs
    deploy = workflow["jobs"]["deploy"]
    assert "refs/heads/main" in deploy["if"]
    assert deploy["concurrency"]["group"] == f"deploy-ExportPipe{service.title()}"


def test_shared_workflow_leaves_service_code_to_service_workflows():
    workflow = _load("shared")
    for event in ("push", "pull_request"):
        paths = workflow["on"][event]["paths"]
        assert "infra/cdk/**" in paths
        assert not any(p.startswith(("services/", "docker/")) for p in paths)
    runs = _runs(workflow)
    assert "make deploy-shared" in runs
    assert "build-push-action" not in str(workflow)
    group = workflow["jobs"]["reapply-services"]["concurrency"]["group"]
    assert "deploy-ExportPipe" in group


@pytest.mark.parametrize("name", ["orchestrator", "worker", "shared"])
def test_actions_are_pinned_and_permissions_minimal(name):
    workflow = _load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for step in _steps(workflow):
        uses = step.get("uses")
        if uses:
            assert re.search(r"@(v\d+|[0-9a-f]{40})$|^docker://\S+:\d", uses), uses
    for job in workflow["jobs"].values():
        if "id-token" in job.get("permissions", {}):
            assert job["permissions"] == {"contents": "read", "id-token": "write"}


@pytest.mark.parametrize("name", ["orchestrator", "worker", "shared"])
def test_make_targets_used_exist(name):
    makefile = (REPO / "Makefile").read_text()
    runs = _runs(_load(name))
    expanded = "\n".join(runs.replace("${{ matrix.service }}", s) for s in SERVICES)
    targets = re.findall(r"make ([a-z-]+)", expanded)
    assert targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target
