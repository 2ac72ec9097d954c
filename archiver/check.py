"""A first contact with the API: one line per question a user asks when something does not work.

Reachable? Credentials accepted? Which server version? How far back does the server keep events,
and has the archive fallen behind that? Each answer names where the setting came from — never the
key itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from archiver.config import Settings
from archiver.errors import ApiError, ArchiveError
from archiver.ingest.fetch import first_event_time
from archiver.prefect.client import PrefectClient, client_for, redact_url
from archiver.prefect.events import format_timestamp
from archiver.storage import open_archive

SOURCE_NAMES = {"flag": "--api-url", "env": "the environment", "config": "the config file", "default": "nowhere"}


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was asked, whether it is fine, and the explanation."""

    topic: str
    ok: bool
    detail: str


def describe_source(settings: Settings, name: str) -> str:
    source = settings.sources.get(name, "default")
    if source == "profile" and settings.profile is not None:
        return f"Prefect profile {settings.profile.name!r} in {settings.profile.path}"
    return SOURCE_NAMES.get(source, source)


def _credentials(settings: Settings) -> str:
    if settings.api_key:
        return f"API key from {describe_source(settings, 'api.key')}"
    if settings.auth_string:
        return f"basic auth string from {describe_source(settings, 'api.auth_string')}"
    return "no credentials sent"


def check(settings: Settings, now: datetime | None = None) -> list[Finding]:
    """Ask the API once per question; stop at the first question that fails."""
    now = now or datetime.now(timezone.utc)
    url = settings.require_api()
    findings = [Finding("api url", True, f"{redact_url(url)} (from {describe_source(settings, 'api.url')})")]
    with client_for(settings, interactive=True) as client:  # someone is waiting at a terminal
        try:
            client.request("GET", "health")
        except ApiError as exc:
            findings.append(Finding("reachable", False, str(exc)))
            return findings
        findings.append(Finding("reachable", True, "GET /health answered"))
        try:
            oldest = first_event_time(client, now, settings.retention)
        except ApiError as exc:
            findings.append(Finding("auth", False, f"{exc} ({_credentials(settings)})"))
            return findings
        findings.append(Finding("auth", True, f"accepted ({_credentials(settings)})"))
        findings.append(_version(client))
    findings.append(_retention(oldest, now))
    findings.append(_archive(settings, oldest, now))
    return findings


def _version(client: PrefectClient) -> Finding:
    try:
        version = client.request("GET", "admin/version")
    except ApiError:
        return Finding("server", True, "version not exposed at /admin/version (Prefect Cloud does not)")
    return Finding("server", True, f"Prefect {version}")


def _retention(oldest: datetime | None, now: datetime) -> Finding:
    if oldest is None:
        return Finding("retained", True, "the server holds no events yet")
    age = now - oldest
    return Finding("retained", True, f"oldest event occurred {format_timestamp(oldest)} ({age / timedelta(days=1):.1f} days ago)")


def _archive(settings: Settings, oldest: datetime | None, now: datetime) -> Finding:
    archive = open_archive(settings.archive_url)
    try:
        status = archive.reader(settings.read_timeout).status(now)
    except ArchiveError as exc:
        return Finding("archive", True, str(exc))
    if status.high_water_mark is None:
        return Finding("archive", True, f"{archive.name}: no sync yet")
    mark = format_timestamp(status.high_water_mark)
    if oldest is not None and status.high_water_mark < oldest:
        return Finding(
            "archive", False,
            f"{archive.name}: high-water mark {mark} is older than the oldest event the server still holds "
            f"({format_timestamp(oldest)}): events between them may be lost — run sync now",
        )
    return Finding("archive", True, f"{archive.name}: {status.events:,} events, high-water mark {mark}")
