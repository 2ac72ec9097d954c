"""The PostgreSQL SQL of run logs and artifacts, each statement run on the writer's connection.

PostgreSQLWriter opens the transaction; these functions only say what to run in it. A page of
logs goes in as one array per column unnested in one INSERT … ON CONFLICT DO NOTHING whose
RETURNING says exactly which ids were new. TEXT cannot hold NUL (U+0000): a message or name with
one is stored with U+FFFD in its place, the whole object (JSON text, where NUL is the escape
\\u0000) exactly as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from archiver.prefect.events import to_utc
from archiver.storage.batches import artifact_columns, log_columns
from archiver.storage.logs import Artifact, Log, LogMark, artifacts_to_write, first_of_each, mark_params
from archiver.storage.statements import SAVE_LOG_MARK
from archiver.storage.writer import WriteCounts

_INSERT_LOGS = """
INSERT INTO logs (id, flow_run_id, task_run_id, level, name, timestamp, message, log, archived_at)
SELECT l.*, %s::TIMESTAMPTZ FROM unnest(%s::UUID[], %s::UUID[], %s::UUID[], %s::INTEGER[], %s::TEXT[],
    %s::TIMESTAMPTZ[], %s::TEXT[], %s::JSON[]) AS l
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_INSERT_ARTIFACTS = """
INSERT INTO artifacts (id, key, type, description, data, flow_run_id, task_run_id, created, updated, artifact, archived_at)
SELECT a.*, %s::TIMESTAMPTZ FROM unnest(%s::UUID[], %s::TEXT[], %s::TEXT[], %s::TEXT[], %s::JSON[], %s::UUID[],
    %s::UUID[], %s::TIMESTAMPTZ[], %s::TIMESTAMPTZ[], %s::JSON[]) AS a
"""


def _text(value: Any) -> str | None:
    """A value for a TEXT column: NUL, which TEXT cannot hold, as U+FFFD."""
    if value is None:
        return None
    text = str(value)
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def save_logs(conn: sa.Connection, logs: Sequence[Log], mark: LogMark) -> WriteCounts:
    unique = first_of_each(list(logs))
    inserted = 0
    if unique:
        rows = conn.exec_driver_sql(_INSERT_LOGS, (datetime.now(timezone.utc), *log_columns(unique, _text))).fetchall()
        inserted = len(rows)
    conn.execute(SAVE_LOG_MARK, mark_params(mark))
    return WriteCounts(inserted=inserted, duplicates=len(logs) - inserted)


def save_artifacts(conn: sa.Connection, artifacts: Sequence[Artifact], mark: LogMark) -> WriteCounts:
    def stored(ids: list[str]) -> dict[str, datetime | None]:
        return {str(i): (to_utc(u) if u else None) for i, u in conn.exec_driver_sql(
            "SELECT id, updated FROM artifacts WHERE id = ANY(%s::UUID[])", (ids,))}

    new, changed = artifacts_to_write(artifacts, stored)
    if changed:
        conn.exec_driver_sql("DELETE FROM artifacts WHERE id = ANY(%s::UUID[])", ([str(a.id) for a in changed],))
    written = new + changed
    if written:
        conn.exec_driver_sql(_INSERT_ARTIFACTS, (datetime.now(timezone.utc), *artifact_columns(written, _text)))
    conn.execute(SAVE_LOG_MARK, mark_params(mark))
    return WriteCounts(inserted=len(new), duplicates=len(artifacts) - len(new), conflicts=len(changed))
