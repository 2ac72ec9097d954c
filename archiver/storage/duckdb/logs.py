"""The DuckDB SQL of run logs and artifacts, each statement run on the writer's connection.

DuckDBWriter opens the transaction; these functions only say what to run in it. A page of logs
goes in as lists unnested in one INSERT OR IGNORE … SELECT (DuckDB's bulk path) whose RETURNING
says exactly which ids were new.
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
INSERT OR IGNORE INTO logs
SELECT * FROM (SELECT unnest($1::UUID[]), unnest($2::UUID[]), unnest($3::UUID[]), unnest($4::INTEGER[]),
    unnest($5::VARCHAR[]), unnest($6::TIMESTAMPTZ[]), unnest($7::VARCHAR[]), unnest($8::JSON[]), $9::TIMESTAMPTZ)
RETURNING id
"""
_INSERT_ARTIFACTS = """
INSERT INTO artifacts
SELECT * FROM (SELECT unnest($1::UUID[]), unnest($2::VARCHAR[]), unnest($3::VARCHAR[]), unnest($4::VARCHAR[]),
    unnest($5::JSON[]), unnest($6::UUID[]), unnest($7::UUID[]), unnest($8::TIMESTAMPTZ[]), unnest($9::TIMESTAMPTZ[]),
    unnest($10::JSON[]), $11::TIMESTAMPTZ)
"""


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def save_logs(conn: sa.Connection, logs: Sequence[Log], mark: LogMark) -> WriteCounts:
    unique = first_of_each(list(logs))
    inserted = 0
    if unique:
        rows = conn.exec_driver_sql(_INSERT_LOGS, (*log_columns(unique, _text), datetime.now(timezone.utc))).fetchall()
        inserted = len(rows)
    conn.execute(SAVE_LOG_MARK, mark_params(mark))
    return WriteCounts(inserted=inserted, duplicates=len(logs) - inserted)


def save_artifacts(conn: sa.Connection, artifacts: Sequence[Artifact], mark: LogMark) -> WriteCounts:
    def stored(ids: list[str]) -> dict[str, datetime | None]:
        return {str(i): (to_utc(u) if u else None) for i, u in conn.exec_driver_sql(
            "SELECT id, updated FROM artifacts WHERE id IN (SELECT unnest($1::UUID[]))", (ids,))}

    new, changed = artifacts_to_write(artifacts, stored)
    if changed:
        conn.exec_driver_sql("DELETE FROM artifacts WHERE id IN (SELECT unnest($1::UUID[]))", ([str(a.id) for a in changed],))
    written = new + changed
    if written:
        conn.exec_driver_sql(_INSERT_ARTIFACTS, (*artifact_columns(written, _text), datetime.now(timezone.utc)))
    conn.execute(SAVE_LOG_MARK, mark_params(mark))
    return WriteCounts(inserted=len(new), duplicates=len(artifacts) - len(new), conflicts=len(changed))
