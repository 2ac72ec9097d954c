"""Schema migrations: numbered SQL files in migrations/duckdb/, applied in order on open.

Each file runs in one transaction together with the row that records it (all or nothing; a new
archive's files all in one), then a CHECKPOINT outside the transaction, because on some DuckDB
versions a crash between DDL and the next checkpoint left a WAL that would not replay (duckdb#18259).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from archiver.errors import ArchiveIncompatible
from archiver.storage.migrations import Migration, shipped

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)
"""


def available() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    return shipped("duckdb")


def applied_versions(conn: sa.Connection) -> set[int]:
    return {row[0] for row in conn.exec_driver_sql("SELECT version FROM schema_migrations")}


def migrate(engine: sa.Engine) -> list[int]:
    """Apply every migration the archive lacks; return the versions applied now.

    One connection for all of them: opening the file costs ~15 ms and closing it a checkpoint, a
    third of a second for a new archive's six migrations when each had two connections of its own.
    """
    migrations = available()
    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql(BOOTSTRAP)
            done = applied_versions(conn)
        newest_known = migrations[-1].version if migrations else 0
        if done and max(done) > newest_known:
            raise ArchiveIncompatible(
                f"the archive's schema is version {max(done)}, newer than this prefect-archiver knows "
                f"({newest_known}): upgrade prefect-archiver to use this archive"
            )
        pending = [m for m in migrations if m.version not in done]
        # A new archive takes them all in one transaction and one checkpoint (0.28 s for ten, each
        # with its own, against 0.07 s): all or nothing is what a new file needs. An archive
        # with data takes them one by one, each kept once it is checkpointed.
        steps = [pending] if not done and pending else [[m] for m in pending]
        for step in steps:
            with conn.begin():
                for migration in step:
                    conn.exec_driver_sql(migration.sql)
                    conn.exec_driver_sql(
                        "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                        (migration.version, migration.name, datetime.now(timezone.utc)),
                    )
            conn.exec_driver_sql("CHECKPOINT")
            conn.rollback()  # end the transaction SQLAlchemy began for the CHECKPOINT
    return [m.version for m in pending]
