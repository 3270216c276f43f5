from __future__ import annotations

from pathlib import Path

import pytest

from exportpipe.common.settings import CommonSettings, SettingsError, load_settings


def test_missing_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPORTPIPE_BUCKET", raising=False)
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    with pytest.raises(SettingsError, match="EXPORTPIPE_BUCKET: Field required"):
        load_settings(CommonSettings)


def test_malformed_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORTPIPE_BUCKET", "bucket-1")
    monkeypatch.setenv("EXPORTPIPE_SHUTDOWN_GRACE_SECONDS", "soon")
    with pytest.raises(SettingsError, match="EXPORTPIPE_SHUTDOWN_GRACE_SECONDS"):
        load_settings(CommonSettings)


def test_env_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / "local.env"
    env.write_text(
        "EXPORTPIPE_BUCKET=from-file\nEXPORTPIPE_OUTPUT_PREFIX=out\n"
        "AWS_EXPORTPIPE_TEST_ONLY=from-file\n"
    )
    monkeypatch.setenv("EXPORTPIPE_ENV_FILE", str(env))
    monkeypatch.setenv("EXPORTPIPE_OUTPUT_PREFIX", "env/")
    monkeypatch.delenv("EXPORTPIPE_BUCKET", raising=False)
    monkeypatch.delenv("AWS_EXPORTPIPE_TEST_ONLY", raising=False)
    settings = load_settings(CommonSettings)
    assert settings.bucket == "from-file"
    assert settings.output_prefix == "env/"
    import os

    assert os.environ["AWS_EXPORTPIPE_TEST_ONLY"] == "from-file"
    monkeypatch.delenv("AWS_EXPORTPIPE_TEST_ONLY")


def test_missing_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXPORTPIPE_ENV_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(CommonSettings)


def test_prefix_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    monkeypatch.setenv("EXPORTPIPE_BUCKET", "bucket-1")
    monkeypatch.setenv("EXPORTPIPE_OUTPUT_PREFIX", "lake/raw")
    assert load_settings(CommonSettings).output_prefix == "lake/raw/"


def test_max_job_seconds_is_a_setting_below_sqs_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    from exportpipe.common.sqs import SQS_MAX_VISIBILITY_SECONDS

    monkeypatch.setenv("EXPORTPIPE_BUCKET", "bucket-1")
    monkeypatch.delenv("EXPORTPIPE_ENV_FILE", raising=False)
    monkeypatch.delenv("EXPORTPIPE_MAX_JOB_SECONDS", raising=False)
    assert load_settings(CommonSettings).max_job_seconds == SQS_MAX_VISIBILITY_SECONDS - 15 * 60
    monkeypatch.setenv("EXPORTPIPE_MAX_JOB_SECONDS", str(SQS_MAX_VISIBILITY_SECONDS))
    with pytest.raises(SettingsError, match="EXPORTPIPE_MAX_JOB_SECONDS"):
        load_settings(CommonSettings)


def test_env_file_in_shell_syntax_exports_aws_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # ``export`` lines and quotes, as a shell-sourceable file writes them: the services
    # and the CLI must read the same values (one parser, python-dotenv).
    env = tmp_path / "local.env"
    env.write_text(
        "# a comment\nexport EXPORTPIPE_BUCKET='from-file'\n"
        'export AWS_EXPORTPIPE_TEST_ONLY="with spaces"\n'
    )
    monkeypatch.setenv("EXPORTPIPE_ENV_FILE", str(env))
    monkeypatch.delenv("EXPORTPIPE_BUCKET", raising=False)
    monkeypatch.delenv("AWS_EXPORTPIPE_TEST_ONLY", raising=False)
    assert load_settings(CommonSettings).bucket == "from-file"
    import os

    assert os.environ["AWS_EXPORTPIPE_TEST_ONLY"] == "with spaces"
    monkeypatch.delenv("AWS_EXPORTPIPE_TEST_ONLY")
