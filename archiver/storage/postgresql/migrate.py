"""Schema migrations of a PostgreSQL archive: numbered SQL files in migrations/postgresql/, applied on open.

Each file runs in one transaction with the row that records it (PostgreSQL's DDL is
transactional: all or nothing). Every such transaction first takes a transaction-level advisory
lock, so two processes opening a new archive at once take turns: the second finds the first's
rows in schema_migrations and applies nothing twice.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from archiver.errors import ArchiveIncompatible
from archiver.storage.migrations import Migration, shipped

# The advisory lock key migrations take (pg_advisory_xact_lock): a constant of our own, apart from
# the writer lock's (lock.py). A writer opened without the writer lock (a test, a script) still
# migrates safely beside another; the lock ends with its transaction, so nothing is left behind.
MIGRATION_LOCK_KEY = 0x7072_6566_6D69_6731  # "prefmig1"

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


def available() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    return shipped("postgresql")


def _locked_versions(conn: sa.Connection) -> set[int]:
    """Inside a transaction: wait for the migration lock, make sure schema_migrations exists, read it."""
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
    conn.exec_driver_sql(BOOTSTRAP)
    return {row[0] for row in conn.exec_driver_sql("SELECT version FROM schema_migrations")}


def migrate(engine: sa.Engine) -> list[int]:
    """Apply every migration the archive lacks; return the versions applied now.

    ArchiveIncompatible when the archive's schema is newer than any this version ships.
    """
    migrations = available()
    newest_known = migrations[-1].version if migrations else 0
    applied = []
    with engine.connect() as conn:
        # schema_migrations is created in the first migration's transaction, not one of its own: a
        # reader must never see it committed before the tables it records (it would take the
        # database for an archive and fail on "relation events does not exist" mid-way through a
        # first sync's migration, where it should say there is no archive yet).
        pending: list[Migration | None] = [*migrations] or [None]
        for migration in pending:
            with conn.begin():
                done = _locked_versions(conn)
                if done and max(done) > newest_known:
                    raise ArchiveIncompatible(
                        f"the archive's schema is version {max(done)}, newer than this prefect-archiver knows "
                        f"({newest_known}): upgrade prefect-archiver to use this archive"
                    )
                if migration is None or migration.version in done:
                    continue
                # Through psycopg itself, with no parameters: the file goes as it is, several
                # statements in one, its % signs (LIKE 'prefect.flow-run.%') left alone.
                driver = conn.connection.driver_connection
                assert driver is not None  # a live connection inside its transaction
                driver.execute(migration.sql)
                conn.exec_driver_sql(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (migration.version, migration.name, datetime.now(timezone.utc)),
                )
                applied.append(migration.version)
    return applied
