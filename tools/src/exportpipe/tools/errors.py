"""Errors the operator CLI reports as one line on stderr, with a non-zero exit code.

Exit codes (documented in ``docs/operations.md``)::

    0  success; for ``submit --wait``: the export completed
    1  the export failed, a wait timed out, or the demo's checks failed
    2  the command could not run: bad arguments, missing settings, no stack
       running / endpoint unreachable, unknown export, an AWS error
    3  ``submit --wait``: the export completed with rejected files
"""

from __future__ import annotations

__all__ = [
    "EXIT_COMPLETED_WITH_ERRORS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_ERRORS = 3


class CliError(Exception):
    """An expected problem: printed as ``exportpipe: <message>`` and exit ``exit_code``.

    Args:
        message: one line saying what is wrong and what to do about it.
        exit_code: the process exit status (2 unless the command ran and failed).
    """

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
