"""The workspace layout rules are enforced by lint, not by convention."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))


def _ruff(path: str, source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUFF, "check", "--no-cache", "--select", "TID251", "--stdin-filename", path, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("path", "banned"),
    [
        ("services/orchestrator/src/exportpipe/orchestrator/x.py", "exportpipe.worker"),
        ("services/worker/src/exportpipe/worker/x.py", "exportpipe.orchestrator"),
        ("services/worker/src/exportpipe/worker/x.py", "exportpipe.tools"),
        ("libs/common/src/exportpipe/common/x.py", "exportpipe.worker"),
        ("libs/common/src/exportpipe/common/x.py", "exportpipe.testing"),
        ("services/worker/src/exportpipe/worker/x.py", "exportpipe.testing"),
        ("services/orchestrator/src/exportpipe/orchestrator/x.py", "exportpipe.testing"),
    ],
)
def test_cross_imports_fail_lint(path: str, banned: str) -> None:
    result = _ruff(path, f"import {banned}\n")
    assert result.returncode == 1, result.stdout
    assert "TID251" in result.stdout


def test_importing_common_is_allowed() -> None:
    result = _ruff(
        "services/worker/src/exportpipe/worker/x.py", "import exportpipe.common.schemas\n"
    )
    assert result.returncode == 0, result.stdout


def test_members_match_the_workspace() -> None:
    import tomllib

    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    assert members == [
        "libs/common",
        "libs/testing",
        "services/orchestrator",
        "services/worker",
        "infra/cdk",
        "tools",
    ]
    for member in members:
        assert (ROOT / member / "pyproject.toml").is_file()
        assert not (ROOT / member / "src" / "exportpipe" / "__init__.py").exists(), (
            "exportpipe is a namespace package shared by every member"
        )


# Building an output key by hand: an f-string placeholder or a quote right before a
# layout segment. Prose that names a key (docstrings, messages) does not match.
_KEY_BUILT_BY_HAND = re.compile(r"""[}"'](?:data/|manifests/|rejected/|_manifest\.json)""")
_LAYOUT_MODULE = ROOT / "libs/common/src/exportpipe/common/layout.py"


def _hand_built_keys() -> list[str]:
    found = []
    trees = ["libs/common/src", "libs/testing/src", "services", "tools/src", "bench"]
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            if path == _LAYOUT_MODULE or "/tests/" in path.as_posix():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _KEY_BUILT_BY_HAND.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_output_keys_are_built_only_by_the_layout_module() -> None:
    # ADR 0019: changing the output layout is a change to exportpipe.common.layout alone.
    assert _hand_built_keys() == []
    assert _KEY_BUILT_BY_HAND.search('key = f"{root}manifests/{file_id}.json"')
