"""Settings from the command line, the environment, a TOML file, the Prefect profile and defaults.

In that order. The environment and the profile use Prefect's own names (PREFECT_API_URL,
PREFECT_API_KEY, PREFECT_API_AUTH_STRING, PREFECT_CLIENT_CUSTOM_HEADERS, …) so the archiver
works wherever Prefect does, with no extra configuration.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from archiver.errors import ConfigError
from archiver.prefect.events import DURATION_UNITS, parse_when
from archiver.prefect.profiles import Profile, active_profile, prefect_home

# Every setting the config file may hold: (section, key) -> (default, kind).
# config.example.toml documents the same list; test_config checks they agree.
SETTINGS: dict[tuple[str, str], tuple[Any, str]] = {
    ("api", "url"): (None, "str"),
    ("api", "key"): (None, "secret"),
    ("api", "auth_string"): (None, "secret"),
    ("api", "timeout"): (timedelta(seconds=30), "duration"),
    ("api", "max_retries"): (6, "int"),
    ("api", "max_retry_time"): (timedelta(minutes=2), "duration"),
    ("api", "lookup_horizon"): (timedelta(days=30), "duration"),
    ("api", "custom_headers"): ({}, "headers"),
    ("api", "ssl_cert_file"): (None, "path"),
    ("api", "tls_insecure_skip_verify"): (False, "bool"),
    ("api", "csrf_support"): (True, "bool"),
    ("api", "max_requests_per_minute"): (None, "int"),
    ("api", "compression"): ("auto", "compression"),
    ("archive", "path"): (None, "path"),
    # A SQLAlchemy URL naming the archive in any backend (a PostgreSQL one may hold a password).
    ("archive", "url"): (None, "secret"),
    ("archive", "read_timeout"): (timedelta(seconds=15), "duration"),
    ("archive", "lock_timeout"): (timedelta(0), "duration"),
    ("ingest", "start"): (None, "when"),
    ("ingest", "concurrency"): (4, "int"),
    ("ingest", "settle"): (timedelta(seconds=60), "duration"),
    ("ingest", "reconcile_horizon"): (timedelta(hours=24), "duration"),
    ("ingest", "retention"): (timedelta(days=7), "duration"),
    ("ingest", "commit_every"): (2000, "int"),
    ("schedule", "every"): (timedelta(minutes=5), "duration"),
    # 0: the trailing reconcile runs inside every sync, so late events arrive within two intervals.
    ("schedule", "reconcile_every"): (timedelta(0), "duration"),
    ("schedule", "verify_every"): (timedelta(days=1), "duration"),
    ("schedule", "max_backoff"): (timedelta(minutes=30), "duration"),
    ("serve", "request_timeout"): (timedelta(seconds=10), "duration"),
    # Run logs at this level and above (DEBUG keeps all; "off" none), artifacts, and how long after a
    # run ended its logs are read again for batches its process sent late.
    ("logs", "level"): (20, "level"),  # INFO
    ("logs", "artifacts"): (True, "bool"),
    ("logs", "horizon"): (timedelta(minutes=10), "duration"),
}

# Settings Prefect itself has: read from the environment and, failing that, the active profile.
PREFECT_NAMES = {
    ("api", "url"): "PREFECT_API_URL",
    ("api", "key"): "PREFECT_API_KEY",
    ("api", "auth_string"): "PREFECT_API_AUTH_STRING",
    ("api", "custom_headers"): "PREFECT_CLIENT_CUSTOM_HEADERS",
    ("api", "ssl_cert_file"): "PREFECT_API_SSL_CERT_FILE",
    ("api", "tls_insecure_skip_verify"): "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
    ("api", "csrf_support"): "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED",
}
ENVIRONMENT = {**PREFECT_NAMES, ("archive", "path"): "ARCHIVER_DB", ("archive", "url"): "ARCHIVER_URL"}
# api.compression: ask for gzipped responses when the API is remote (auto), always, or never.
COMPRESSION = ("auto", "gzip", "off")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Secrets are kept out of repr so they never reach a log line."""

    db_path: Path
    # archive.url when set (it may hold a database password: kept out of repr); else the DuckDB file db_path.
    url: str | None = field(default=None, repr=False)
    api_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    auth_string: str | None = field(default=None, repr=False)
    timeout: timedelta = timedelta(seconds=30)
    max_retries: int = 6
    max_retry_time: timedelta = timedelta(minutes=2)
    lookup_horizon: timedelta = timedelta(days=30)
    # Extra headers for proxies and CDNs; may hold tokens, so kept out of repr too.
    custom_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    ssl_cert_file: Path | None = None
    tls_insecure_skip_verify: bool = False
    csrf_support: bool = True
    # None: unpaced (self-hosted). Set it to the Prefect Cloud plan's limit to pace requests.
    max_requests_per_minute: int | None = None
    # Whether responses are asked for gzipped: "auto" (not from this machine or a private network), "gzip", "off".
    compression: str = "auto"
    read_timeout: timedelta = timedelta(seconds=15)
    lock_timeout: timedelta = timedelta(0)
    start: datetime | None = None
    concurrency: int = 4
    settle: timedelta = timedelta(seconds=60)
    reconcile_horizon: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=7)
    commit_every: int = 2000
    every: timedelta = timedelta(minutes=5)
    reconcile_every: timedelta = timedelta(0)
    verify_every: timedelta = timedelta(days=1)
    max_backoff: timedelta = timedelta(minutes=30)
    # How long `serve` lets one request's query run before interrupting it (HTTP 504).
    request_timeout: timedelta = timedelta(seconds=10)
    # Run logs kept from this level up (Python's numbers: 10 DEBUG keeps all); None: logs are not harvested.
    log_level: int | None = 20
    artifacts: bool = True
    logs_horizon: timedelta = timedelta(minutes=10)
    # Where each setting came from ("flag", "env", "config", "profile", "default"); never the value.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    profile: Profile | None = field(default=None, compare=False)

    @property
    def archive_url(self) -> str:
        """The archive as a SQLAlchemy URL (storage.open_archive): archive.url, else the DuckDB file at archive.path."""
        if self.url:
            return self.url
        from archiver.storage.duckdb import archive_url

        return archive_url(self.db_path)

    def settled_until(self, now: datetime | None = None) -> datetime:
        """The newest `occurred` the archive may treat as complete: now − ingest.settle, because the
        server stores events asynchronously and the newest seconds are still filling in."""
        return (now or datetime.now(timezone.utc)) - self.settle

    def require_api(self) -> str:
        """The API URL, or a ConfigError that says how to set it."""
        if not self.api_url:
            raise ConfigError(
                "PREFECT_API_URL is not set: export it (self-hosted: http://HOST:4200/api; "
                "Cloud: https://api.prefect.cloud/api/accounts/<id>/workspaces/<id>) "
                "or set api.url in the config file"
            )
        return self.api_url


def parse_duration(value: Any, name: str) -> timedelta:
    """Parse 90, "90s", "5m", "24h", "7d" or "2w" into a timedelta."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration like '60s', '5m' or '24h', not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{name} must be a duration like '60s', '5m' or '24h', not {value!r}")
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if seconds < 0:
        raise ConfigError(f"{name} must not be negative")
    return timedelta(seconds=seconds)


# logs.level's names: Python's (and Prefect's) levels, and the ways to say "no logs".
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_NO_LOGS = {"OFF", "NONE", "FALSE"}


def parse_level(value: Any, name: str) -> int | None:
    """A log level by name (DEBUG … CRITICAL), or None for "off"."""
    text = str(value).strip().upper()
    if value is False or text in _NO_LOGS:
        return None
    if text in LOG_LEVELS and not isinstance(value, bool):
        return LOG_LEVELS[text]
    raise ConfigError(f'{name} must be one of {", ".join(LOG_LEVELS)} or "off", not {value!r}')


def _convert(value: Any, kind: str, name: str) -> Any:
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string")
        return value.strip() or None
    if kind == "path":
        if not isinstance(value, str):  # TOML `path = 42` or `= true`: not a path someone meant
            raise ConfigError(f'{name} must be a file path in quotes, e.g. "/data/archive.duckdb", not {value!r}')
        return Path(value).expanduser() if value.strip() else None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if kind == "headers":
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ConfigError(f'{name} must be a JSON object of header names to values, e.g. {{"X-Team": "data"}}') from None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError(f"{name} must be an object of header names to string values")
        return dict(value)
    if kind == "int":
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
        if number < 1:
            raise ConfigError(f"{name} must be at least 1, not {number}")
        return number
    if kind == "compression":
        text = str(value).strip().lower()
        if text not in COMPRESSION:
            raise ConfigError(f'{name} must be "auto", "gzip" or "off", not {value!r}')
        return text
    if kind == "duration":
        return parse_duration(value, name)
    if kind == "level":
        return parse_level(value, name)
    if kind == "when":
        if value in (None, ""):
            return None
        return parse_when(str(value), name=name)
    raise AssertionError(kind)


def read_config_file(path: Path) -> dict[tuple[str, str], Any]:
    """Read a TOML config file, refusing unknown keys so a typo can't silently be ignored."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (from --config or ARCHIVER_CONFIG)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[tuple[str, str], Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: '{section}' must be a [section], not a value")
        for key, value in table.items():
            if (section, key) not in SETTINGS:
                known = ", ".join(f"{s}.{k}" for s, k in SETTINGS)
                raise ConfigError(f"config file {path}: unknown setting {section}.{key} (known: {known})")
            values[(section, key)] = value
    return values


def _origin(name: str, sources: Mapping[str, str]) -> str:
    """Where a setting came from, in the words a user set it with."""
    section, key = name.split(".")
    return {"flag": f"--{'url' if key == 'url' else 'db'}", "env": ENVIRONMENT.get((section, key), name),
            "config": f"{name} in the config file"}.get(sources.get(name, ""), name)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve settings: flags (keys "section.key") > environment > config file > defaults."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    config_path = config_path or environ.get("ARCHIVER_CONFIG") or None
    from_file = read_config_file(Path(config_path).expanduser()) if config_path else {}

    resolved: dict[str, Any] = {}
    sources: dict[str, str] = {}
    profile: Profile | None = None

    def from_profile(prefect_name: str) -> Any:
        nonlocal profile
        profile = profile or active_profile(environ)  # read once, and only when needed
        return profile.settings.get(prefect_name)

    for (section, key), (default, kind) in SETTINGS.items():
        name = f"{section}.{key}"
        env_name = ENVIRONMENT.get((section, key))
        prefect_name = PREFECT_NAMES.get((section, key))
        if name in flags:
            raw, source, label = flags[name], "flag", name
        elif env_name and environ.get(env_name):
            raw, source, label = environ[env_name], "env", env_name
        elif (section, key) in from_file:
            raw, source, label = from_file[(section, key)], "config", name
        elif prefect_name and from_profile(prefect_name) not in (None, "") and profile is not None:
            raw, source = profile.settings[prefect_name], "profile"
            label = f"{prefect_name} in profile {profile.name!r} of {profile.path}"
        elif name == "api.ssl_cert_file" and environ.get("SSL_CERT_FILE"):
            # Prefect's own default for PREFECT_API_SSL_CERT_FILE.
            raw, source, label = environ["SSL_CERT_FILE"], "env", "SSL_CERT_FILE"
        else:
            resolved[name] = default
            sources[name] = "default"
            continue
        resolved[name] = _convert(raw, kind, label)
        sources[name] = source

    db_path = resolved["archive.path"]
    if resolved["archive.url"] and db_path is not None:
        raise ConfigError(
            f"both archive.url (from {_origin('archive.url', sources)}) and archive.path (from "
            f"{_origin('archive.path', sources)}) name the archive: keep one (a DuckDB file is duckdb:///PATH)"
        )
    if db_path is None:
        db_path = prefect_home(environ) / "archive.duckdb"

    return Settings(
        db_path=db_path,
        url=resolved["archive.url"],
        api_url=resolved["api.url"],
        api_key=resolved["api.key"],
        auth_string=resolved["api.auth_string"],
        timeout=resolved["api.timeout"],
        max_retries=resolved["api.max_retries"],
        max_retry_time=resolved["api.max_retry_time"],
        lookup_horizon=resolved["api.lookup_horizon"],
        custom_headers=resolved["api.custom_headers"],
        ssl_cert_file=resolved["api.ssl_cert_file"],
        tls_insecure_skip_verify=resolved["api.tls_insecure_skip_verify"],
        csrf_support=resolved["api.csrf_support"],
        max_requests_per_minute=resolved["api.max_requests_per_minute"],
        compression=resolved["api.compression"],
        read_timeout=resolved["archive.read_timeout"],
        lock_timeout=resolved["archive.lock_timeout"],
        start=resolved["ingest.start"],
        concurrency=resolved["ingest.concurrency"],
        settle=resolved["ingest.settle"],
        reconcile_horizon=resolved["ingest.reconcile_horizon"],
        retention=resolved["ingest.retention"],
        commit_every=resolved["ingest.commit_every"],
        every=resolved["schedule.every"],
        reconcile_every=resolved["schedule.reconcile_every"],
        verify_every=resolved["schedule.verify_every"],
        max_backoff=resolved["schedule.max_backoff"],
        request_timeout=resolved["serve.request_timeout"],
        log_level=resolved["logs.level"],
        artifacts=resolved["logs.artifacts"],
        logs_horizon=resolved["logs.horizon"],
        sources=sources,
        profile=profile,
    )
