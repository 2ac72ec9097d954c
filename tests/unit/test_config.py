"""Settings precedence, defaults and the one-line errors users see for bad settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archiver.config import SETTINGS, load_settings
from archiver.errors import BadInput, ConfigError
from archiver.prefect.events import parse_when
from archiver.storage import open_archive

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "archiver.toml"
    path.write_text(text)
    return path


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    config = write(tmp_path, '[api]\nurl = "http://file:4200/api"\n[ingest]\nconcurrency = 2\nsettle = "5m"\n')
    env = {"PREFECT_API_URL": "http://env:4200/api", "ARCHIVER_DB": str(tmp_path / "env.duckdb")}
    settings = load_settings({"archive.path": str(tmp_path / "flag.duckdb")}, env, config)
    assert settings.db_path == tmp_path / "flag.duckdb"
    assert settings.api_url == "http://env:4200/api"
    assert settings.concurrency == 2
    assert settings.settle == timedelta(minutes=5)
    assert settings.reconcile_horizon == timedelta(hours=24)
    assert settings.sources["api.url"] == "env"
    assert settings.sources["archive.path"] == "flag"
    assert settings.sources["ingest.concurrency"] == "config"
    assert settings.sources["ingest.retention"] == "default"


def test_default_archive_lives_in_prefect_home(tmp_path):
    assert load_settings({}, {"PREFECT_HOME": str(tmp_path)}).db_path == tmp_path / "archive.duckdb"
    assert load_settings({}, {}).db_path == Path("~/.prefect/archive.duckdb").expanduser()


def test_config_file_from_environment(tmp_path):
    config = write(tmp_path, "[ingest]\ncommit_every = 10\n")
    assert load_settings({}, {"ARCHIVER_CONFIG": str(config)}).commit_every == 10


@pytest.mark.parametrize(
    "text, message",
    [
        ("[ingest]\nconcurency = 3\n", r"unknown setting ingest\.concurency"),
        ("[ingest]\nconcurrency = 0\n", r"ingest\.concurrency must be at least 1"),
        ('[ingest]\nsettle = "soon"\n', r"ingest\.settle must be a duration"),
        ('[ingest]\nstart = "yesterday-ish"\n', r"ingest\.start .* is not a time"),
        ("[ingest\n", r"is not valid TOML"),
        ('api = "x"\n', r"'api' must be a \[section\]"),
        ('[api]\ncompression = "brotli"\n', r'api\.compression must be "auto", "gzip" or "off", not \'brotli\''),
    ],
)
def test_malformed_settings_give_one_clear_error(tmp_path, text, message):
    with pytest.raises((ConfigError, BadInput), match=message):
        load_settings({}, {}, write(tmp_path, text))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, {"ARCHIVER_CONFIG": str(tmp_path / "nope.toml")})


def test_secrets_stay_out_of_repr():
    settings = load_settings({}, {"PREFECT_API_KEY": "pnu_SECRET123", "PREFECT_API_AUTH_STRING": "u:SECRETPASS"})
    assert settings.api_key == "pnu_SECRET123"
    assert "SECRET" not in repr(settings)


def test_example_config_documents_every_setting_with_its_default():
    text = (ROOT / "config.example.toml").read_text()
    # Commented-out settings count as documented: uncomment them to parse the whole file.
    uncommented = re.sub(r"^# ([a-z_]+ = .*)$", r"\1", text, flags=re.M)
    document = tomllib.loads(uncommented)
    documented = {(section, key) for section, table in document.items() for key in table}
    assert documented == set(SETTINGS)
    # The settings left active in the example are exactly the built-in defaults.
    from_example = load_settings({}, {}, ROOT / "config.example.toml")
    defaults = load_settings({}, {})
    assert from_example == defaults


def test_when_accepts_dates_times_and_ages():
    now = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    assert parse_when("2026-11-01", now=now) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_when("2026-11-01T10:00:00+02:00", now=now) == datetime(2026, 11, 1, 8, tzinfo=timezone.utc)
    assert parse_when("2026-11-01T10:00:00", now=now) == datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    assert parse_when("3d", now=now) == now - timedelta(days=3)
    assert parse_when("2h ago", now=now) == now - timedelta(hours=2)
    assert parse_when("now", now=now) == now


def test_cli_reports_a_bad_setting_in_one_line_with_exit_2(tmp_path):
    config = write(tmp_path, "[ingest]\nconcurency = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "archiver", "status", "--config", str(config)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown setting ingest.concurency" in result.stderr


def write_profiles(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "profiles.toml"
    path.write_text(text)
    return path


PROFILES = """
active = "work"

[profiles.work]
PREFECT_API_URL = "http://work:4200/api"
PREFECT_API_AUTH_STRING = "admin:pass"
PREFECT_CLIENT_CUSTOM_HEADERS = '{"X-Team": "data"}'
PREFECT_API_TLS_INSECURE_SKIP_VERIFY = true

[profiles.cloud]
PREFECT_API_URL = "https://api.prefect.cloud/api/accounts/a/workspaces/w"
PREFECT_API_KEY = "pnu_fromprofile"
"""


def test_the_active_prefect_profile_fills_what_nothing_else_sets(tmp_path):
    write_profiles(tmp_path, PROFILES)
    settings = load_settings({}, {"PREFECT_HOME": str(tmp_path)})
    assert settings.api_url == "http://work:4200/api"
    assert settings.auth_string == "admin:pass"
    assert settings.custom_headers == {"X-Team": "data"}
    assert settings.tls_insecure_skip_verify is True
    assert settings.sources["api.url"] == "profile"
    assert settings.profile is not None and settings.profile.name == "work"


def test_prefect_profile_variable_picks_another_profile(tmp_path):
    write_profiles(tmp_path, PROFILES)
    settings = load_settings({}, {"PREFECT_HOME": str(tmp_path), "PREFECT_PROFILE": "cloud"})
    assert settings.api_url.startswith("https://api.prefect.cloud/")
    assert settings.api_key == "pnu_fromprofile"


def test_profiles_path_variable_points_at_another_file(tmp_path):
    elsewhere = write_profiles(tmp_path / "elsewhere", PROFILES)
    settings = load_settings({}, {"PREFECT_HOME": str(tmp_path / "empty"), "PREFECT_PROFILES_PATH": str(elsewhere)})
    assert settings.api_url == "http://work:4200/api"


def test_environment_and_config_file_beat_the_profile(tmp_path):
    write_profiles(tmp_path, PROFILES)
    env = {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://env:4200/api"}
    config = write(tmp_path, '[api]\nauth_string = "from:file"\n')
    settings = load_settings({}, env, config)
    assert settings.api_url == "http://env:4200/api" and settings.sources["api.url"] == "env"
    assert settings.auth_string == "from:file" and settings.sources["api.auth_string"] == "config"


def test_a_missing_active_profile_or_file_sets_nothing(tmp_path):
    write_profiles(tmp_path, PROFILES)
    assert load_settings({}, {"PREFECT_HOME": str(tmp_path), "PREFECT_PROFILE": "nope"}).api_url is None
    assert load_settings({}, {"PREFECT_HOME": str(tmp_path / "none")}).api_url is None


def test_a_malformed_profiles_file_is_ignored_with_a_warning_like_prefect_does(tmp_path, caplog):
    write_profiles(tmp_path, "active = [\n")
    settings = load_settings({}, {"PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": "http://env/api"})
    assert settings.api_url == "http://env/api"
    assert any("not valid TOML" in r.message for r in caplog.records)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PREFECT_CLIENT_CUSTOM_HEADERS": "{not json"}, "must be a JSON object"),
        ({"PREFECT_CLIENT_CUSTOM_HEADERS": '["a"]'}, "object of header names"),
        ({"PREFECT_CLIENT_CUSTOM_HEADERS": '{"X-N": 1}'}, "object of header names"),
        ({"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "maybe"}, "must be true or false"),
    ],
)
def test_malformed_prefect_client_settings_are_named(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_settings({}, {"PREFECT_HOME": str(tmp_path), **env})
    assert next(iter(env)) in str(info.value)


@pytest.mark.parametrize("value", ["42", "true", "[\"a.duckdb\"]"])
def test_an_archive_path_that_is_not_a_string_is_refused_naming_the_key(tmp_path, value):
    config = write(tmp_path, f"[archive]\npath = {value}\n")
    result = subprocess.run([sys.executable, "-m", "archiver", "status", "--config", str(config)],
                            capture_output=True, text=True, cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                                                                if k != "ARCHIVER_DB"})
    assert result.returncode == 2
    assert result.stderr.startswith('prefect-archiver: error: archive.path must be a file path in quotes, e.g. '
                                    '"/data/archive.duckdb", not ')
    assert result.stderr.count("\n") == 1
    assert not list(tmp_path.glob("4*")) and not list(tmp_path.glob("True*"))  # no archive made at "42"


def test_the_archive_is_named_by_url_or_by_path_never_both(tmp_path):
    by_path = load_settings({}, {"ARCHIVER_DB": str(tmp_path / "a b.duckdb")})
    assert open_archive(by_path.archive_url).name == str(tmp_path / "a b.duckdb")
    url = "postgresql+psycopg://archiver:pa55word@db.internal:5432/archive"
    by_url = load_settings({"archive.url": url}, {})
    assert by_url.archive_url == url and by_url.sources["archive.url"] == "flag"
    assert "pa55word" not in repr(by_url)  # the URL may hold a database password
    assert load_settings({}, {"ARCHIVER_URL": f"duckdb:///{tmp_path}/x.duckdb"}).sources["archive.url"] == "env"
    with pytest.raises(ConfigError, match="both archive.url .*--url.* and archive.path .*ARCHIVER_DB") as both:
        load_settings({"archive.url": url}, {"ARCHIVER_DB": str(tmp_path / "a.duckdb")})
    assert "pa55word" not in str(both.value)
