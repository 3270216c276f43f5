"""``.env``-style settings files: the one ``exportpipe local up`` writes, and finding it.

The format is what the services read through ``EXPORTPIPE_ENV_FILE`` (python-dotenv):
``KEY=value`` lines, ``#`` comments, optional ``export`` and quotes. Where the CLI looks
(first match wins), and why the file's values override the environment, is
docs/operations.md, *The exportpipe CLI*.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from exportpipe.tools.errors import CliError

__all__ = [
    "DEFAULT_STATE_DIR",
    "ENV_FILE_NAME",
    "ENV_FILE_VARIABLE",
    "find_env_file",
    "read_env_file",
    "resolve_environment",
    "write_env_file",
]

DEFAULT_STATE_DIR = Path(".exportpipe")
ENV_FILE_NAME = "local.env"
ENV_FILE_VARIABLE = "EXPORTPIPE_ENV_FILE"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``path`` into a dict.

    Raises:
        CliError: the file does not exist or cannot be read.
    """
    try:
        with path.open(encoding="utf-8") as stream:
            parsed = dotenv_values(stream=stream, interpolate=False)
    except FileNotFoundError:
        raise CliError(f"env file not found: {path}") from None
    except OSError as exc:
        raise CliError(f"cannot read env file {path}: {exc.strerror}") from None
    return {key: value for key, value in parsed.items() if value is not None}


def write_env_file(path: Path, values: Mapping[str, str], *, header: str = "") -> None:
    """Write ``values`` as ``KEY=value`` lines (atomically, mode 0600)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if "\n" in value or "\n" in key:
            raise ValueError(f"{key}: values must be single lines")
        lines.append(f"{key}={value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    tmp.replace(path)


def find_env_file(
    explicit: Path | None, environ: Mapping[str, str], cwd: Path | None = None
) -> Path | None:
    """The env file the CLI uses (see the module docstring), or ``None``."""
    if explicit is not None:
        return explicit
    named = environ.get(ENV_FILE_VARIABLE)
    if named:
        return Path(named)
    default = (cwd or Path.cwd()) / DEFAULT_STATE_DIR / ENV_FILE_NAME
    return default if default.is_file() else None


def resolve_environment(
    explicit: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], Path | None]:
    """The effective settings: the environment overlaid with the env file's values.

    Returns:
        ``(values, env_file)``; ``env_file`` is ``None`` when no file was used.

    Raises:
        CliError: a named env file does not exist or cannot be read.
    """
    base = dict(os.environ if environ is None else environ)
    path = find_env_file(explicit, base)
    if path is None:
        return base, None
    return {**base, **read_env_file(path)}, path
