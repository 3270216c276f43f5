"""The orchestrator's settings, loaded once at start-up (``EXPORTPIPE_`` prefix)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from exportpipe.common.settings import CommonSettings
from exportpipe.common.sizing import DEFAULT_DEPLOYMENT

__all__ = ["DEFAULT_API_CLIENT", "ApiClientConfig", "OrchestratorSettings"]

_REQUESTS = DEFAULT_DEPLOYMENT.requests_queue
_SQS_MAX_DELAY_SECONDS = 900


@dataclass(frozen=True)
class ApiClientConfig:
    """How the orchestrator talks to the Export API, passed whole to its client.

    Attributes:
        concurrency: most calls in flight at once from this process.
        connect_timeout / read_timeout: per request, seconds.
        retry_attempts / retry_max_wait: in-process tries for brief 5xx and timeouts.
    """

    concurrency: int = 4
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retry_attempts: int = 3
    retry_max_wait: float = 2.0


DEFAULT_API_CLIENT = ApiClientConfig()
_API = DEFAULT_API_CLIENT


class OrchestratorSettings(CommonSettings):
    """What the orchestrator needs on top of :class:`CommonSettings`.

    Queue timing defaults come from ``DEFAULT_DEPLOYMENT.requests_queue`` so the
    consumer heartbeats consistently with the queue the CDK stack creates.
    """

    requests_queue_url: str = Field(min_length=1, description="SQS 1: ExportRequested.")
    requests_dlq_url: str = Field(min_length=1, description="SQS 1's dead-letter queue.")
    jobs_queue_url: str = Field(min_length=1, description="SQS 2: DownloadJob.")

    export_source: str = Field(default="http-v1", description="ExportSource plug-in name.")
    export_api_url: str = Field(description="Base URL of the Export API (contract v1).")
    export_api_token: SecretStr = Field(description="Bearer token for the Export API.")
    page_size: int = Field(default=1000, ge=1, le=10_000, description="Files asked per page.")
    api_concurrency: int = Field(
        default=_API.concurrency, ge=1, le=64, description="Export API calls at once."
    )
    api_connect_timeout_seconds: float = Field(default=_API.connect_timeout, gt=0)
    api_read_timeout_seconds: float = Field(default=_API.read_timeout, gt=0)
    api_retry_attempts: int = Field(
        default=_API.retry_attempts,
        ge=1,
        le=10,
        description="In-process tries for brief 5xx/timeouts.",
    )
    api_retry_max_wait_seconds: float = Field(default=_API.retry_max_wait, ge=0)

    concurrency: int = Field(default=DEFAULT_DEPLOYMENT.orchestrator.concurrency, ge=1, le=64)
    send_concurrency: int = Field(default=4, ge=1, le=32, description="Job batches in flight.")
    visibility_timeout_seconds: int = Field(default=_REQUESTS.visibility_timeout_seconds, ge=10)
    heartbeat_seconds: float = Field(default=_REQUESTS.heartbeat_seconds, gt=0)
    max_receive_count: int = Field(default=_REQUESTS.max_receive_count, ge=1)

    not_ready_initial_delay_seconds: int = Field(default=30, ge=0, le=_SQS_MAX_DELAY_SECONDS)
    not_ready_max_delay_seconds: int = Field(default=900, ge=0, le=_SQS_MAX_DELAY_SECONDS)
    not_ready_max_wait_seconds: float = Field(default=24 * 3600, gt=0)
    stall_check_seconds: float = Field(default=300.0, gt=0)

    @property
    def api_client(self) -> ApiClientConfig:
        """The Export API client's settings as one object."""
        return ApiClientConfig(
            concurrency=self.api_concurrency,
            connect_timeout=self.api_connect_timeout_seconds,
            read_timeout=self.api_read_timeout_seconds,
            retry_attempts=self.api_retry_attempts,
            retry_max_wait=self.api_retry_max_wait_seconds,
        )

    @field_validator("export_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not carry credentials, a query string or a fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> OrchestratorSettings:
        if self.heartbeat_seconds >= self.visibility_timeout_seconds:
            raise ValueError("heartbeat_seconds must be below visibility_timeout_seconds")
        if self.not_ready_initial_delay_seconds > self.not_ready_max_delay_seconds:
            raise ValueError("not_ready_initial_delay_seconds exceeds not_ready_max_delay_seconds")
        return self
