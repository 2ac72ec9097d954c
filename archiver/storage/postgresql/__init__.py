"""The PostgreSQL backend: an archive in one database of a PostgreSQL server, for teams.

Many processes may read and one writes at a time (an advisory lock, lock.py); readers never wait
for the writer, since PostgreSQL's MVCC shows each reader the last committed batch. The archive
has no folder: the service's heartbeat goes under $PREFECT_HOME, named after the database.
The URL is postgresql+psycopg://USER:PASSWORD@HOST:5432/DB (postgresql:// means the same); its
password appears nowhere we write: `name`, messages and file names use storage.redact or host/port/db.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archiver.storage.base import Archive, WriterHolder
from archiver.storage.postgresql.connect import parse_url

if TYPE_CHECKING:
    from archiver.storage.postgresql.lock import AdvisoryLock
    from archiver.storage.postgresql.reader import PostgreSQLReader
    from archiver.storage.postgresql.rows import PostgreSQLSink, PostgreSQLTables
    from archiver.storage.postgresql.writer import PostgreSQLWriter


# The lock timeout of the pooled connection exists() asks on: archive.read_timeout's default, so
# it shares the idle connections of readers built with the default settings.
EXISTS_TIMEOUT = timedelta(seconds=15)


def open_archive(url: str) -> PostgreSQLArchive:
    """The archive in the database a postgresql[+psycopg]://… URL names. Opening connects to nothing."""
    parse_url(url)  # ConfigError now for a URL that names no database or another driver
    return PostgreSQLArchive(url)


class PostgreSQLArchive(Archive):
    """An archive in one PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"PostgreSQLArchive({self.name!r})"

    @property
    def name(self) -> str:
        from archiver.storage import redact

        return redact(self.url)

    @property
    def identity(self) -> str:
        """postgresql://HOST:PORT/DB: the user is left out too (another role reads the same archive)."""
        from archiver.storage.postgresql.connect import where

        return f"postgresql://{where(self.url)}"

    def exists(self) -> bool:
        """True when the database holds an archive (schema_migrations and events); False when the
        database or its schema is missing. A server that cannot be reached, or refuses us, raises
        ArchiveError saying what to check: "no archive" would send the user looking in the wrong place.

        Asked on a pooled reader connection: get_event and every serve request ask it before
        reading, and a connection of its own each time cost more than the lookup (~20 ms of a
        28 ms get_event, bench/pg_concurrency.py)."""
        from archiver.storage.postgresql.connect import DatabaseMissing, require_psycopg

        require_psycopg()  # the extra to install, before pool imports the driver
        from archiver.storage.postgresql import pool
        from archiver.storage.postgresql.pool import ARCHIVE_EXISTS

        def ask(conn: Any) -> bool:
            row = conn.execute(ARCHIVE_EXISTS).fetchone()
            return bool(row and row[0])

        try:
            return pool.with_connection(self.url, EXISTS_TIMEOUT, ask)
        except DatabaseMissing:
            return False

    def writer(self, timeout: timedelta) -> PostgreSQLWriter:
        from archiver.storage.postgresql.writer import PostgreSQLWriter

        return PostgreSQLWriter(self.url, timeout)

    def reader(self, timeout: timedelta) -> PostgreSQLReader:
        from archiver.storage.postgresql.reader import PostgreSQLReader

        return PostgreSQLReader(self.url, timeout)

    def table_source(self, timeout: timedelta) -> PostgreSQLTables:
        from archiver.storage.postgresql.rows import open_source

        return open_source(self.url, timeout)

    def table_sink(self, timeout: timedelta) -> PostgreSQLSink:
        from archiver.storage.postgresql.rows import open_sink

        return open_sink(self.url, timeout)

    def writer_lock(self, timeout: timedelta = timedelta(0), holder: str = "") -> AdvisoryLock:
        from archiver.storage.postgresql.lock import AdvisoryLock

        return AdvisoryLock(self.url, timeout, holder)

    def writer_holder(self) -> WriterHolder:
        from archiver.storage.postgresql.lock import read_holder

        return read_holder(self.url)

    def writer_alive(self) -> bool:
        from archiver.storage.postgresql.lock import lock_is_held

        return lock_is_held(self.url)

    @property
    def heartbeat_path(self) -> Path:
        """$PREFECT_HOME/archiver-postgresql-HOST-PORT-DB.service.json (never the user or password)."""
        from archiver.prefect.profiles import prefect_home
        from archiver.storage.postgresql.connect import where

        safe = re.sub(r"[^A-Za-z0-9.-]+", "_", where(self.url).replace(":", "-").replace("/", "-")).strip("_")
        return prefect_home(os.environ) / f"archiver-postgresql-{safe}.service.json"
