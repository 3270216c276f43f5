"""The stack a CLI command talks to: its settings, boto3 clients, and one-line errors.

A :class:`Stack` is built from the effective settings (see
:mod:`exportpipe.tools.envfile`). It never changes ``os.environ``: clients get the
endpoint, region and credentials from the resolved values explicitly, so several stacks
can be used side by side in one process (tests do).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)
from pydantic import ValidationError

from exportpipe.common.errors import AwsTransientError
from exportpipe.common.settings import CommonSettings
from exportpipe.common.tracking import ExportTracker
from exportpipe.tools.envfile import resolve_environment
from exportpipe.tools.errors import CliError

__all__ = ["Stack", "translate_aws_error"]

_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 2},
    connect_timeout=3,
    read_timeout=30,
)
_NOT_FOUND_CODES = {
    "AWS.SimpleQueueService.NonExistentQueue": "queue",
    "QueueDoesNotExist": "queue",
    "NoSuchBucket": "bucket",
    "ResourceNotFoundException": "table",
    "NotFound": "topic",
}


@dataclass(frozen=True)
class Stack:
    """Settings of one deployment (local or AWS) and the clients to reach it.

    Attributes:
        values: the effective ``EXPORTPIPE_*`` and ``AWS_*`` settings.
        env_file: the env file they came from, if any (named in error messages).
    """

    values: Mapping[str, str]
    env_file: Path | None = None

    @classmethod
    def load(cls, env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Stack:
        """Resolve the settings (``--env-file``, ``EXPORTPIPE_ENV_FILE``, default, env)."""
        values, path = resolve_environment(env_file, environ)
        return cls(values=values, env_file=path)

    # ----------------------------------------------------------------- settings

    def _hint(self) -> str:
        if self.env_file is None:
            return (
                "no env file found: start a local stack with `exportpipe local up`, "
                "or pass --env-file / set EXPORTPIPE_ENV_FILE"
            )
        return f"not set in {self.env_file} or the environment"

    def get(self, name: str) -> str | None:
        """A setting's value, or ``None`` when unset or empty."""
        value = self.values.get(name, "").strip()
        return value or None

    def require(self, name: str) -> str:
        """A setting's value.

        Raises:
            CliError: naming the variable and where it was looked for.
        """
        value = self.get(name)
        if value is None:
            raise CliError(f"{name} is not set ({self._hint()})")
        return value

    @property
    def endpoint(self) -> str | None:
        """``AWS_ENDPOINT_URL`` (the moto server locally), or ``None`` for real AWS."""
        return self.get("AWS_ENDPOINT_URL")

    @property
    def region(self) -> str:
        """The AWS region.

        Raises:
            CliError: no region configured.
        """
        region = self.get("AWS_DEFAULT_REGION") or self.get("AWS_REGION")
        if region is None:
            raise CliError(f"AWS_DEFAULT_REGION is not set ({self._hint()})")
        return region

    @property
    def bucket(self) -> str:
        """The output bucket (``EXPORTPIPE_BUCKET``)."""
        return self.require("EXPORTPIPE_BUCKET")

    @property
    def output_prefix(self) -> str:
        """``EXPORTPIPE_OUTPUT_PREFIX`` as the services read it (ending with ``/``)."""
        return str(self.common_setting("output_prefix"))

    def common_setting(self, name: str) -> Any:
        """Setting ``name`` of :class:`CommonSettings`, read and validated as the services do.

        Unset, it takes the settings' own default, so the CLI keeps no copy of it.

        Raises:
            CliError: the value is invalid (naming the variable and why).
        """
        variable = f"EXPORTPIPE_{name.upper()}"
        raw = self.get(variable)
        if raw is None:
            return CommonSettings.model_fields[name].default
        try:
            checked = CommonSettings.__pydantic_validator__.validate_assignment(
                CommonSettings.model_construct(), name, raw
            )
        except ValidationError as exc:
            raise CliError(f"{variable}: {exc.errors()[0]['msg']}: {raw!r}") from None
        return getattr(checked, name)

    def queue_urls(self, queue: str) -> tuple[str, str]:
        """``(queue_url, dlq_url)`` of ``requests`` (SQS 1) or ``jobs`` (SQS 2)."""
        name = {"requests": "REQUESTS", "jobs": "JOBS"}[queue]
        return (
            self.require(f"EXPORTPIPE_{name}_QUEUE_URL"),
            self.require(f"EXPORTPIPE_{name}_DLQ_URL"),
        )

    # ----------------------------------------------------------------- clients

    def check_reachable(self, timeout: float = 2.0) -> None:
        """Fail fast, with one clear line, when a configured endpoint does not answer.

        Only a custom endpoint (the local moto server) is probed; real AWS is not.

        Raises:
            CliError: nothing listens at ``AWS_ENDPOINT_URL``.
        """
        endpoint = self.endpoint
        if endpoint is None:
            return
        parts = urlsplit(endpoint)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise CliError(
                f"cannot reach the AWS endpoint {endpoint} ({why}): is the local stack "
                "running? start it with `exportpipe local up`"
            ) from None

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` with this stack's endpoint, region and credentials."""
        session = boto3.session.Session(
            aws_access_key_id=self.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=self.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=self.get("AWS_SESSION_TOKEN"),
            region_name=self.region,
        )
        return session.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint, config=_CLIENT_CONFIG
        )

    def tracker(self) -> ExportTracker:
        """The export tracking table (``EXPORTPIPE_TABLE``)."""
        return ExportTracker(self.client("dynamodb"), self.require("EXPORTPIPE_TABLE"))


def translate_aws_error(exc: BaseException, stack: Stack | None = None) -> CliError:
    """One line for an AWS failure the operator can act on."""
    endpoint = stack.endpoint if stack is not None else None
    where = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, AwsTransientError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, EndpointConnectionError):
        return CliError(
            f"cannot reach the AWS endpoint{where}: is the local stack running? "
            "start it with `exportpipe local up`"
        )
    if isinstance(exc, NoCredentialsError):
        return CliError("no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, NoRegionError):
        return CliError("AWS_DEFAULT_REGION is not set")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        operation = exc.operation_name
        kind = _NOT_FOUND_CODES.get(code)
        if kind is not None:
            return CliError(
                f"{operation}: the {kind} does not exist{where} ({code}); is the env file "
                "current? `exportpipe local up` recreates the local stack"
            )
        message = str(error.get("Message", "")).splitlines()[0:1]
        return CliError(
            f"{operation} failed{where}: {code}" + (f": {message[0]}" if message else "")
        )
    if isinstance(exc, BotoCoreError | AwsTransientError):
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CliError(f"AWS call failed{where}: {first}")
    return CliError(f"{type(exc).__name__}: {exc}")
