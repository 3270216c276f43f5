"""Each image's install steps, replayed without Docker into a scratch virtualenv.

The builder stage of ``docker/<service>.Dockerfile`` is replayed step by step: the
build context is the repository filtered by ``.dockerignore``, bind mounts exist only
for their ``RUN``, ``COPY`` persists, and the ``uv sync`` commands run as written (with
``UV_PROJECT_ENVIRONMENT`` pointing at a scratch venv). Then the service's console
script must import there, and nothing else of the workspace may be installed.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "dockerfile_checks", Path(__file__).with_name("test_dockerfiles.py")
)
assert _SPEC is not None
assert _SPEC.loader is not None
checks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(checks)

REPO = checks.REPO
FORBIDDEN = (
    "exportpipe-infra",
    "exportpipe-testing",
    "exportpipe-tools",
    "aws-cdk-lib",
    "moto",
    "pytest",
    "cfn-lint",
)

PROBE = """
import importlib.metadata as md, importlib.util, json, sys
service, other = sys.argv[1], sys.argv[2]
main = md.entry_points(group="console_scripts")[f"exportpipe-{service}"].load()
import exportpipe.common
print(json.dumps({
    "main": f"{main.__module__}:{main.__name__}",
    "other": importlib.util.find_spec(f"exportpipe.{other}") is not None,
    "testing": importlib.util.find_spec("exportpipe.testing") is not None,
    "sources": sorted(e.name for e in md.entry_points(group="exportpipe.export_sources")),
    "installed": sorted(d.metadata["Name"].lower() for d in md.distributions()),
    "common_file": exportpipe.common.__file__,
}))
"""


def _copy_into(context_dst: Path, source: str) -> None:
    """Copy ``source`` (repo-relative) to ``context_dst``, as the build context holds it."""
    path = REPO / source
    if path.is_file():
        if checks.dockerignore_includes(source):
            context_dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context_dst)
        return
    for file in path.rglob("*"):
        relative = file.relative_to(REPO).as_posix()
        if file.is_file() and checks.dockerignore_includes(relative):
            target = context_dst / file.relative_to(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)


def _replay_builder(service: str, workdir: Path, venv: Path) -> None:
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is needed to replay the image build"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "copy",
        "UV_COMPILE_BYTECODE": "0",  # the image compiles; here it would only cost time
        "VIRTUAL_ENV": "",
    }
    builder = checks.stages(checks.dockerfile(service))[1]
    for kind, arguments in builder:
        if kind == "COPY" and "--from" not in arguments:
            source, target = arguments.split()
            _copy_into(workdir / target, source)
        elif kind == "RUN":
            mounted = []
            for source, target in checks.bind_mounts(arguments):
                destination = workdir / target
                if not destination.exists():
                    _copy_into(destination, source)
                    mounted.append(destination)
            command = shlex.split(arguments[arguments.index("uv sync") :])
            result = subprocess.run(
                [uv, *command[1:]],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, result.stderr[-4000:]
            for destination in mounted:  # bind mounts vanish after their RUN
                destination.unlink()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("service", "other"), [("orchestrator", "worker"), ("worker", "orchestrator")]
)
def test_image_installs_only_its_service(tmp_path, service, other):
    workdir, venv = tmp_path / "src", tmp_path / "venv"
    workdir.mkdir()
    _replay_builder(service, workdir, venv)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, service, other],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"},
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    import json

    found = json.loads(probe.stdout)
    assert found["main"] == f"exportpipe.{service}.__main__:main"
    assert found["other"] is False
    assert found["testing"] is False  # test support never ships in an image
    # The built-in Export API source is found through its entry point, in its image only.
    assert found["sources"] == (["http-v1"] if service == "orchestrator" else [])
    installed = set(found["installed"])
    assert {"exportpipe-common", f"exportpipe-{service}"} <= installed
    assert f"exportpipe-{other}" not in installed
    assert not installed & set(FORBIDDEN)
    # Installed as a wheel into the venv, not as an editable pointer at the sources.
    assert Path(found["common_file"]).is_relative_to(venv)
    assert (venv / "bin" / f"exportpipe-{service}").exists()
