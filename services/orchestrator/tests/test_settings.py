"""Orchestrator settings: loaded from the environment, validated at start-up."""

from __future__ import annotations

import pytest

from exportpipe.common.settings import SettingsError, load_settings
from exportpipe.common.sizing import DEFAULT_DEPLOYMENT
from exportpipe.orchestrator.settings import OrchestratorSettings

ENV = {
    "EXPORTPIPE_BUCKET": "bucket",
    "EXPORTPIPE_REQUESTS_QUEUE_URL": "http://sqs/requests",
    "EXPORTPIPE_REQUESTS_DLQ_URL": "http://sqs/requests-dlq",
    "EXPORTPIPE_JOBS_QUEUE_URL": "http://sqs/jobs",
    "EXPORTPIPE_EXPORT_API_URL": "https://api.example.com/",
    "EXPORTPIPE_EXPORT_API_TOKEN": "very-secret",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_loads_with_deployment_defaults(env: pytest.MonkeyPatch) -> None:
    settings = load_settings(OrchestratorSettings)
    assert settings.export_api_url == "https://api.example.com"
    assert settings.export_api_token.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(settings)
    timing = DEFAULT_DEPLOYMENT.requests_queue
    assert settings.visibility_timeout_seconds == timing.visibility_timeout_seconds
    assert settings.heartbeat_seconds == timing.heartbeat_seconds
    assert settings.max_receive_count == timing.max_receive_count
    assert settings.concurrency == DEFAULT_DEPLOYMENT.orchestrator.concurrency
    assert settings.not_ready_max_wait_seconds == 24 * 3600
    assert settings.not_ready_max_delay_seconds == 900
    assert settings.export_source == "http-v1"


def test_missing_variable_is_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("EXPORTPIPE_JOBS_QUEUE_URL")
    with pytest.raises(SettingsError, match="EXPORTPIPE_JOBS_QUEUE_URL"):
        load_settings(OrchestratorSettings)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EXPORTPIPE_EXPORT_API_URL", "ftp://api.example.com"),
        ("EXPORTPIPE_EXPORT_API_URL", "https://user:pw@api.example.com"),
        ("EXPORTPIPE_EXPORT_API_URL", "https://api.example.com/?key=1"),
        ("EXPORTPIPE_PAGE_SIZE", "0"),
        ("EXPORTPIPE_NOT_READY_MAX_DELAY_SECONDS", "901"),
    ],
)
def test_malformed_values_are_named(env: pytest.MonkeyPatch, key: str, value: str) -> None:
    env.setenv(key, value)
    with pytest.raises(SettingsError, match=key):
        load_settings(OrchestratorSettings)


def test_heartbeat_must_be_below_visibility(env: pytest.MonkeyPatch) -> None:
    env.setenv("EXPORTPIPE_HEARTBEAT_SECONDS", "200")
    with pytest.raises(SettingsError, match="heartbeat_seconds"):
        load_settings(OrchestratorSettings)


def test_max_job_seconds_reaches_the_consumer(env: pytest.MonkeyPatch) -> None:
    from exportpipe.common.sqs import ConsumerConfig

    env.setenv("EXPORTPIPE_MAX_JOB_SECONDS", "7200")
    settings = load_settings(OrchestratorSettings)
    config = ConsumerConfig.from_settings(settings, queue_url="q", dlq_url="d")
    assert config.max_job_seconds == 7200


def test_api_client_settings_travel_as_one_object(env: pytest.MonkeyPatch) -> None:
    from exportpipe.orchestrator.settings import ApiClientConfig

    env.setenv("EXPORTPIPE_API_CONCURRENCY", "9")
    config = load_settings(OrchestratorSettings).api_client
    # Unset variables take the client's own defaults: no second copy of them.
    assert config == ApiClientConfig(concurrency=9)
