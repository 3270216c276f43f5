"""Export API simulator: reference contract v1 over real HTTP, with deterministic files.

A development and test tool (not shipped in the service images). It serves exports
described by :class:`ExportSpec` -- gzip/zstd JSONL, zip of CSVs, tar and tar.gz
archives, plain files -- whose bytes are rebuilt identically from the spec anywhere
(:func:`build`, :func:`expected_files`), lists their sha256 and sizes, serves the bytes
itself (with ``Range`` support), and injects faults on request (:class:`Fault`) or at
seeded random rates (:class:`RandomFaults`).

In a test::

    with SimulatorServer([ExportSpec.mixed("exp-1", 40)], token="t") as sim:
        ...  # point the orchestrator at sim.url
        sim.inject(Fault(route="listing", status=429, retry_after=2))

As a process: ``python -m exportpipe.tools.simulator --port 0 --exports spec.json``.
"""

from exportpipe.tools.simulator.content import (
    ContentCache,
    ExpectedFile,
    FileContent,
    build,
    expected_files,
)
from exportpipe.tools.simulator.server import DEFAULT_TOKEN, RequestRecord, SimulatorServer
from exportpipe.tools.simulator.spec import (
    ALL_KINDS,
    KIND_INFO,
    Corruption,
    ExportSpec,
    Fault,
    FileKind,
    FileSpec,
    RandomFaults,
    SimulatorConfig,
)

__all__ = [
    "ALL_KINDS",
    "DEFAULT_TOKEN",
    "KIND_INFO",
    "ContentCache",
    "Corruption",
    "ExpectedFile",
    "ExportSpec",
    "Fault",
    "FileContent",
    "FileKind",
    "FileSpec",
    "RandomFaults",
    "RequestRecord",
    "SimulatorConfig",
    "SimulatorServer",
    "build",
    "expected_files",
]
