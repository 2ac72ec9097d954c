"""The harvest's plan on any SQL backend: the pass's cursor, and the runs whose logs need reading.

Backend-neutral: the cursor statements are SQLAlchemy texts with named parameters
(storage/statements.py), and the plan is log_queries.pending_runs in the backend's Dialect. Each
backend's writer runs these on its own connection, inside its own transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from archiver.prefect.events import to_utc
from archiver.storage import log_queries
from archiver.storage.logs import LogRun, log_run_from_row
from archiver.storage.statements import ADVANCE_LOGS_CURSOR, LOGS_CURSOR


def logs_cursor(conn: sa.Connection) -> datetime | None:
    """Runs archived before this were all planned by a complete pass (None: no pass yet)."""
    value = conn.execute(LOGS_CURSOR).scalar()
    return to_utc(value) if value is not None else None


def advance_logs_cursor(conn: sa.Connection, planned_at: datetime) -> None:
    """Move the cursor to `planned_at`, never back."""
    conn.execute(ADVANCE_LOGS_CURSOR, {"planned_at": planned_at})


def pending_log_runs(conn: sa.Connection, dialect: log_queries.Dialect, since: datetime, limit: int,
                     after: tuple[str, str] | None = None) -> list[LogRun]:
    """One batch of the runs whose logs need reading (ArchiveWriter.pending_log_runs)."""
    rows = conn.exec_driver_sql(log_queries.pending_runs(dialect),
                                tuple(log_queries.progress_params(since, limit, after))).fetchall()
    return [log_run_from_row(tuple(row)) for row in rows]
