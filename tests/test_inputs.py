"""Nothing the server or a user sends stops the archive: bad items are quarantined, bad input refused."""

from __future__ import annotations

import pytest

from tests.support import cli_env, run_cli


@pytest.mark.parametrize("args", [
    ["sync", "--since", "9999-12-31T23:59:59-01:00"],
    ["sync", "--until", "0001-01-01T00:00:00+01:00"],
    ["events", "--since", "0001-01-01T00:00:00+01:00"],
])
def test_a_time_outside_utc_on_the_command_line_is_bad_input(args, tmp_path):
    # No server at all: the time is refused before anything is opened or asked.
    result = run_cli(args, cli_env("http://127.0.0.1:9/api", tmp_path / "a.duckdb"))
    assert result.returncode == 2, result.stderr
    assert "outside the years 1 to 9999" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "a.duckdb").exists()
