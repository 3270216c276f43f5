"""``exportpipe demo`` (what ``make demo`` runs), smaller: it passes and cleans up."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from exportpipe.tools.demo import CORRUPT_FILE_ID, DemoOptions, demo_export, run_demo
from exportpipe.tools.errors import CliError
from exportpipe.tools.local import read_state


@pytest.mark.e2e
def test_demo_passes_and_tears_everything_down(tmp_path: Path) -> None:
    out = io.StringIO()
    state_dir = tmp_path / "demo"
    code = run_demo(
        DemoOptions(files=10, state_dir=state_dir, file_size=32 * 1024),
        Console(file=out, width=120),
    )
    text = out.getvalue()
    # On a failure, each service log's last lines say which process went wrong and how.
    logs = "".join(
        f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted((state_dir / "logs").glob("*.log"))
    )
    assert code == 0, text + logs
    assert text.count("PASS") == 8
    assert "FAIL" not in text
    assert f"{CORRUPT_FILE_ID}: sha256_mismatch" in text
    assert "demo passed" in text
    # Not a terminal: the progress comes as whole lines, none cut to the console width.
    [final] = [line for line in text.splitlines() if line.startswith("demo-export completed")]
    assert final.startswith("demo-export completed_with_errors: 10/10 files · 1 rejected · ")
    # The progress line and the summary give the same rate (one definition).
    line_rate = final.rsplit(" · ", 1)[1]
    [summary_rate] = re.findall(r"files/s, ([0-9.]+ [kMG]?B/s)", text)
    assert line_rate == summary_rate
    assert read_state(state_dir / "stack") is None  # the stack was stopped
    assert (state_dir / "logs" / "worker-2.log").is_file()  # kept: the dir was given


def test_demo_export_mix() -> None:
    spec = demo_export(files=36)
    kinds = [spec.file(i).kind for i in range(spec.count)]
    assert {"jsonl.gz", "jsonl.zst", "csv.zip", "jsonl.tar.gz", "csv.tar", "jsonl", "csv"} <= set(
        kinds
    )
    assert [f.file_id for f in spec.files if f.corrupt] == [CORRUPT_FILE_ID]
    assert [f.file_id for f in spec.files if not f.declare_compression] == [
        "undeclared-compression"
    ]
    with pytest.raises(CliError, match="at least 3"):
        DemoOptions(files=2)
