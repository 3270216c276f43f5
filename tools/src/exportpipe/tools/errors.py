"""Errors the operator CLI reports as one line on stderr, with a non-zero exit code.

What each exit code means is docs/operations.md, *Exit status*.
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
