"""Every command block the docs mark as runnable runs, verbatim, against a local stack.

A block is runnable when the line before its opening fence is ``<!-- runnable -->``
(invisible when rendered)::

    <!-- runnable -->
    ```sh
    exportpipe local up
    ...
    ```

Each block runs with ``bash -e -o pipefail`` in a directory that looks like a fresh
checkout (symlinks to the repository's top-level entries, so ``make install`` and
``.venv/bin/activate`` work as written) but has its own ``.exportpipe/`` state, with no
``AWS_*`` or ``EXPORTPIPE_*`` variables from the caller. It must exit 0 and leave no
process of the local stack behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
DOCUMENTS = ("README.md", "docs/operations.md")
_FENCE = re.compile(r"^```(\w+)\s*$")
_BLOCK_TIMEOUT = 300  # seconds; about 60 s on an idle 2-core machine for all blocks


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every block marked runnable in ``text``.

    Raises:
        ValueError: a marker not followed by a ``sh`` fence, or a block never closed.
    """
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None or fence.group(1) not in ("sh", "bash"):
            raise ValueError(f"line {i + 1}: {MARKER} must come right before a ```sh fence")
        try:
            end = lines.index("```", i + 2)
        except ValueError:
            raise ValueError(f"line {i + 2}: runnable block never closed") from None
        blocks.append((i + 2, "\n".join(lines[i + 2 : end])))
    return blocks


def _cases() -> list[object]:
    return [
        pytest.param(doc, code, id=f"{doc}:{line}")
        for doc in DOCUMENTS
        for line, code in runnable_blocks((REPO / doc).read_text())
    ]


def test_the_marker_finds_the_blocks_it_should() -> None:
    """The README's CLI block, and the local-stack and raw-client blocks, are checked."""
    found = {doc: runnable_blocks((REPO / doc).read_text()) for doc in DOCUMENTS}
    assert [code.splitlines()[0] for _, code in found["README.md"]] == ["make install"]
    operations = [code for _, code in found["docs/operations.md"]]
    assert any("exportpipe local up" in code and "local ps" in code for code in operations)
    assert any("aws --endpoint-url" in code and "sqs send-message" in code for code in operations)
    with pytest.raises(ValueError, match="right before"):
        runnable_blocks(f"{MARKER}\n```json\n{{}}\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks(f"{MARKER}\n```sh\nexportpipe local up\n")


def _checkout(tmp_path: Path) -> Path:
    """A directory that behaves like the repository root, with its own state."""
    work = tmp_path / "checkout"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".exportpipe", ".git"):
            (work / entry.name).symlink_to(entry)
    return work


def _environment() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "EXPORTPIPE_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    uv = os.environ.get("UV")  # set by `uv run`: the Makefile finds uv on PATH
    if uv:
        env["PATH"] = f"{Path(uv).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(_BLOCK_TIMEOUT + 60)
@pytest.mark.parametrize(("doc", "code"), _cases())
def test_runnable_block(doc: str, code: str, tmp_path: Path) -> None:
    work = _checkout(tmp_path)
    state = work / ".exportpipe"
    try:
        run = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code],
            cwd=work,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=_BLOCK_TIMEOUT,
            check=False,
        )
    finally:
        leftover = (state / "local.json").exists() or (state / "services.json").exists()
        if leftover:  # the block failed before its `local down`: clean up after it
            subprocess.run(
                [str(REPO / ".venv" / "bin" / "exportpipe"), "local", "down"],
                cwd=work,
                env=_environment(),
                capture_output=True,
                timeout=120,
                check=False,
            )
    output = f"--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
    assert run.returncode == 0, f"{doc}: block exited {run.returncode}\n{output}"
    assert not leftover, f"{doc}: the block left the local stack running\n{output}"
