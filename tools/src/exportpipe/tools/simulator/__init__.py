"""Export API simulator: reference contract v1 over real HTTP, with deterministic files.

A development and test tool (not shipped in the service images; docs/simulator.md).
Exports are described by :class:`ExportSpec`; their bytes are rebuilt identically
anywhere (:func:`build`, :func:`expected_files`); faults come on request
(:class:`Fault`) or at seeded rates (:class:`RandomFaults`). In a test, see
:mod:`.server`; as a process, ``python -m exportpipe.tools.simulator``.
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
