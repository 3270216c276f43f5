"""Finding and reading the settings file the CLI and the services share."""

from __future__ import annotations

from pathlib import Path

import pytest

from exportpipe.tools.envfile import (
    find_env_file,
    read_env_file,
    resolve_environment,
    write_env_file,
)
from exportpipe.tools.errors import CliError


def test_round_trip_and_dotenv_syntax(tmp_path: Path) -> None:
    path = tmp_path / "a.env"
    write_env_file(path, {"A": "1", "B": "http://x:1/y?z=2"}, header="two\nlines")
    assert read_env_file(path) == {"A": "1", "B": "http://x:1/y?z=2"}
    path.write_text("# c\n\nexport C='quoted value'\nD=\"x\"\nnot a line\nE=\n")
    assert read_env_file(path) == {"C": "quoted value", "D": "x", "E": ""}
    with pytest.raises(ValueError, match="single lines"):
        write_env_file(path, {"A": "1\n2"})


def test_search_order(tmp_path: Path) -> None:
    default = tmp_path / ".exportpipe" / "local.env"
    assert find_env_file(None, {}, tmp_path) is None
    write_env_file(default, {"A": "1"})
    assert find_env_file(None, {}, tmp_path) == default
    named = tmp_path / "named.env"
    assert find_env_file(None, {"EXPORTPIPE_ENV_FILE": str(named)}, tmp_path) == named
    explicit = tmp_path / "explicit.env"
    assert find_env_file(explicit, {"EXPORTPIPE_ENV_FILE": str(named)}, tmp_path) == explicit


def test_file_values_override_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    write_env_file(path, {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
    values, used = resolve_environment(
        path, {"AWS_ENDPOINT_URL": "http://stale:1", "EXPORTPIPE_BUCKET": "b"}
    )
    assert used == path
    assert values == {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "EXPORTPIPE_BUCKET": "b"}


def test_missing_named_file_is_a_cli_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="env file not found"):
        resolve_environment(None, {"EXPORTPIPE_ENV_FILE": str(tmp_path / "gone.env")})


def test_the_cli_reads_common_settings_as_the_services_do() -> None:
    from exportpipe.common.settings import CommonSettings
    from exportpipe.tools.context import Stack

    stack = Stack.load(None, {"EXPORTPIPE_OUTPUT_PREFIX": "team-a"})
    assert stack.output_prefix == "team-a/"
    unset = Stack.load(None, {})
    assert unset.common_setting("stall_seconds") == CommonSettings(bucket="bkt").stall_seconds
    with pytest.raises(CliError, match=r"EXPORTPIPE_OUTPUT_PREFIX: .*relative key prefix"):
        _ = Stack.load(None, {"EXPORTPIPE_OUTPUT_PREFIX": "../x"}).output_prefix
