"""Reaching the PostgreSQL server: the URL as SQLAlchemy and libpq read it, the engine, and errors
turned into ours with what to check.

Every message names the archive by its redacted URL (storage.redact): the password never appears,
not even inside the driver's own text (scrubbed in case a server or libpq ever echoes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from archiver.errors import ArchiveError, ArchiveMissing, ConfigError

if TYPE_CHECKING:
    import psycopg

DRIVER = "postgresql+psycopg"  # SQLAlchemy's dialect for psycopg 3
INSTALL_HINT = 'pip install "prefect-archiver[postgres]"'

# Bounds we send on every connection instead of leaning on the server's defaults: times read and
# cut in UTC whatever the server's TimeZone; a connect that cannot get through gives up in 10 s.
CONNECT_TIMEOUT_SECONDS = 10
SESSION_OPTIONS = "-c TimeZone=UTC"
# What the archiver's connections call themselves in pg_stat_activity (the writer lock adds its holder).
APPLICATION_NAME = "prefect-archiver"


def require_psycopg() -> None:
    """ConfigError naming the extra to install when psycopg (the PostgreSQL driver) is missing."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"a PostgreSQL archive needs the psycopg driver, which is not installed: {INSTALL_HINT}"
        ) from None


def parse_url(url: str) -> URL:
    """The archive URL as SQLAlchemy's URL, on the psycopg 3 dialect; ConfigError for any other driver.

    postgresql://… and postgresql+psycopg://… name the same archive; psycopg2 or asyncpg URLs (from
    a Prefect server's settings, say) are refused rather than quietly reinterpreted.
    """
    from archiver.storage import redact

    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"{redact(url)!r} is not a PostgreSQL URL: write postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
                          ) from None
    if parsed.drivername not in ("postgresql", DRIVER):
        raise ConfigError(
            f"the archive URL {redact(url)!r} names the driver {parsed.drivername!r}; prefect-archiver talks to "
            f"PostgreSQL through psycopg 3: write {DRIVER}://USER:PASSWORD@HOST:5432/DB"
        )
    if not parsed.database:
        raise ConfigError(f"the archive URL {redact(url)!r} names no database: write {DRIVER}://USER:PASSWORD@HOST:5432/DB")
    return parsed.set(drivername=DRIVER)


def connect_args(application_name: str = APPLICATION_NAME, lock_timeout: timedelta | None = None) -> dict[str, Any]:
    """Keyword arguments every psycopg connection gets (SQLAlchemy passes them through).

    `lock_timeout`: how long a statement waits for a row or table lock another session holds
    (a writer's, or a DDL's) before failing, instead of the server's default of forever.
    """
    options = SESSION_OPTIONS
    if lock_timeout is not None:
        options += f" -c lock_timeout={max(1, int(lock_timeout.total_seconds() * 1000))}"
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "options": options, "application_name": application_name}


def create_engine(url: str, pool_size: int = 2, lock_timeout: timedelta | None = None) -> sa.Engine:
    """An engine on a real pool (QueuePool), unlike DuckDB's NullPool.

    An idle PostgreSQL connection holds no lock that keeps readers or other writers out (MVCC),
    while opening one costs a round trip, authentication and, remote, a TLS handshake: so keep a
    few. pre_ping replaces a connection the server dropped (a restart, an idle timeout) instead
    of failing the next batch on it.
    """
    require_psycopg()
    return sa.create_engine(parse_url(url), pool_size=pool_size, max_overflow=2, pool_pre_ping=True,
                            connect_args=connect_args(lock_timeout=lock_timeout))


def raw_connect(url: str, application_name: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A psycopg connection of its own, outside every pool (the writer lock's: it lives as long as the lock)."""
    require_psycopg()
    import psycopg

    engine_url = parse_url(url)
    dialect = sa.create_engine(engine_url, poolclass=sa.pool.NullPool).dialect
    args, kwargs = dialect.create_connect_args(engine_url)
    kwargs.update(connect_args(application_name))
    try:
        return psycopg.connect(*args, autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise classify(url, exc) from None


def _scrub(url: str, text: str) -> str:
    """The driver's first line with the URL's password removed, should it ever appear there."""
    first = text.strip().splitlines()[0] if text.strip() else text
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return first
    for password in (parsed.password, _query_value(parsed.query, "password")):
        if password:
            first = first.replace(str(password), "***")
    return first


def where(url: str) -> str:
    """host:port/db of the archive, for messages and file names (never user or password)."""
    parsed = make_url(url)
    host = parsed.host or _query_value(parsed.query, "host") or "localhost"
    return f"{host}:{parsed.port or 5432}/{parsed.database}"


def _query_value(query: Mapping[str, str | tuple[str, ...]], key: str) -> str | None:
    value = query.get(key)
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


class DatabaseMissing(ArchiveMissing):
    """No archive in the database the URL names (no such database, or no schema in it yet)."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        ArchiveError.__init__(self, message)


def classify(url: str, exc: BaseException) -> ArchiveError:
    """A driver error as one of ours, saying what to check: host, credentials, database."""
    from archiver.storage import redact

    original = getattr(exc, "orig", None) or exc
    text = _scrub(url, str(original))
    lower = text.lower()
    name = redact(url)
    if ('role "' in lower and "does not exist" in lower) or "password authentication failed" in lower \
            or "no password supplied" in lower or "authentication failed" in lower:
        return ArchiveError(f"PostgreSQL refused the credentials for {name} ({text}): check the user and "
                            "password in the URL (or ~/.pgpass)")
    if 'database "' in lower and "does not exist" in lower:
        return DatabaseMissing(name, f"no database {make_url(url).database!r} on the server of {name} ({text}): "
                                     "create it (CREATE DATABASE …) or check the database name in the URL")
    if "permission denied" in lower:
        return ArchiveError(f"PostgreSQL denied access for {name} ({text}): the user needs CONNECT on the "
                            "database and CREATE on its public schema (or ownership of the archive's tables)")
    if any(word in lower for word in ("connection refused", "could not connect", "connection failed", "timeout",
                                      "could not translate host name", "no such file or directory", "server closed")):
        return ArchiveError(f"cannot reach the PostgreSQL server of {name} ({text}): check the host and port, "
                            "that the server is running, and that it accepts connections from this machine")
    return ArchiveError(f"PostgreSQL archive {name}: {text}")
