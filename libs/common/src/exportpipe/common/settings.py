"""Settings shared by both services, loaded once at start-up from the environment.

Every variable has the ``EXPORTPIPE_`` prefix. AWS endpoints, region and credentials
are *not* settings of ours: boto3 reads the standard ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION`` and credential variables itself.

``EXPORTPIPE_ENV_FILE`` may name a ``.env``-style file (``exportpipe local up`` writes
one); values in the real environment win over the file. ``AWS_*`` lines of that file
are exported to the process environment (if not already set) so that boto3 sees them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "CommonSettings",
    "SettingsError",
    "load_settings",
]

ENV_PREFIX = "EXPORTPIPE_"


class SettingsError(SystemExit):
    """Start-up configuration is missing or malformed; the message names the variable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # str() and the exit status print it
        self.message = message


class CommonSettings(BaseSettings):
    """What every exportpipe process needs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    bucket: str = Field(min_length=3, max_length=63, description="Output bucket.")
    output_prefix: str = Field(default="exports/", max_length=512)
    table: str | None = Field(default=None, description="Export tracking table (optional).")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    metrics_namespace: str = "ExportPipe"
    metrics_flush_seconds: float = Field(default=60.0, gt=0)
    shutdown_grace_seconds: float = Field(default=90.0, ge=0, le=115)
    wait_time_seconds: int = Field(default=20, ge=0, le=20)
    events_topic_arn: str | None = Field(
        default=None, description="SNS topic for ExportCompleted events."
    )
    events_bus_name: str | None = Field(
        default=None, description="EventBridge bus for ExportCompleted events."
    )
    stall_seconds: float = Field(
        default=3600.0, gt=0, description="Idle time after which an active export is stalled."
    )
    heartbeat_file: Path | None = Field(
        default=None, description="Touched while the consumer loops run (container health)."
    )
    max_job_seconds: float = Field(
        # 15 minutes under SQS's 12-hour visibility ceiling: time to dead-letter the job
        # with its reason before the message could reappear on its own.
        default=12 * 3600 - 15 * 60,
        gt=0,
        lt=12 * 3600,
        description="A job running this long is refused as job_deadline_exceeded.",
    )

    @field_validator("output_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative key prefix such as 'exports/'")
        if len(value.encode()) > 511:  # with its "/", within schemas.PREFIX_MAX_LENGTH
            raise ValueError("must fit in 512 bytes (S3 keys are limited to 1,024)")
        return value if value == "" or value.endswith("/") else value + "/"


S = TypeVar("S", bound=BaseSettings)


def _export_aws_lines(env_file: Path) -> None:
    # boto3 reads AWS_* from the process environment only; the environment wins.
    for key, value in dotenv_values(env_file).items():
        if key.startswith("AWS_") and value is not None:
            os.environ.setdefault(key, value)


def load_settings(kind: type[S]) -> S:
    """Load and validate ``kind`` from the environment (and ``EXPORTPIPE_ENV_FILE``).

    Raises:
        SettingsError: naming each missing or malformed variable, e.g.
            ``EXPORTPIPE_BUCKET: field required``.
    """
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE")
    if env_file:
        path = Path(env_file)
        if not path.is_file():
            raise SettingsError(f"{ENV_PREFIX}ENV_FILE: no such file: {path}")
        _export_aws_lines(path)
    try:
        return kind(_env_file=env_file)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
