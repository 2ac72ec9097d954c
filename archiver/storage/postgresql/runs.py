"""The PostgreSQL SQL of run metadata and run states, each statement run on the writer's connection.

PostgreSQLWriter opens the transaction; these functions only say what to run in it. Rows go in
as one array per column, unnested in one INSERT … SELECT (one statement per batch, never one per
row). The typed columns of run metadata are cast here in Python (typed.py) the way DuckDB's
TRY_CAST casts them, so a value that is not of its column's type leaves that column NULL and the
object whole in `object`, instead of failing the refresh on every sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from archiver.prefect.events import to_utc
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage.postgresql.typed import COLUMN_TYPES, OBJECT_COLUMNS, column_values, jsonb_text, text_value
from archiver.storage.writer import PendingRun, RunState, StateFetch, StorageBlock

# -- run metadata --------------------------------------------------------------------------------

# The objects a batch's new events name, queued in the same transaction as the events
# (object_kind() is the SQL function of migration 0001). Parameters: resource ids, queued_at.
QUEUE_OBJECTS = """
INSERT INTO object_refresh_queue (kind, id, queued_at, attempts)
SELECT DISTINCT object_kind(r), right(r, 36)::UUID, %s::TIMESTAMPTZ, 0
FROM unnest(%s::TEXT[]) AS r
WHERE object_kind(r) <> ''
ON CONFLICT DO NOTHING
"""

# How a column's array arrives (the parameter's type) and becomes the column (the expression).
# TEXT[] columns come as JSON arrays of strings: a list of lists cannot go through unnest (it
# flattens), and jsonb_array_elements_text gives each string back exactly, JSON null as NULL.
_PARAMETER = {"text": "TEXT[]", "jsonb": "JSONB[]", "uuid": "UUID[]", "integer": "INTEGER[]",
              "double": "DOUBLE PRECISION[]", "boolean": "BOOLEAN[]", "timestamptz": "TIMESTAMPTZ[]",
              "text[]": "JSONB[]"}


def _column_expression(column: str, sql_type: str) -> str:
    if sql_type == "text[]":
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text({column})) END"
    return column


def _save_objects_sql(kind: str) -> str:
    columns = ["id", *OBJECT_COLUMNS[kind], "created", "updated", "object", "archived_at"]
    types = COLUMN_TYPES[kind]
    arrays = ", ".join(f"%s::{_PARAMETER[types[c]]}" for c in columns if c != "archived_at")
    names = ", ".join(c for c in columns if c != "archived_at")
    selected = ", ".join(
        "id::UUID" if c == "id" else "%s::TIMESTAMPTZ" if c == "archived_at" else _column_expression(c, types[c])
        for c in columns
    )
    # archived_at's parameter comes first in the text (the SELECT list), then the arrays.
    return f"INSERT INTO {kind} ({', '.join(columns)}) SELECT {selected} FROM unnest({arrays}) AS o({names})"


def queued_objects(conn: sa.Connection, kind: str, after: str | None, limit: int) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT id FROM object_refresh_queue WHERE kind = %s AND (%s::UUID IS NULL OR id > %s::UUID) "
        "ORDER BY id LIMIT %s",
        (kind, after, after, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def save_objects(conn: sa.Connection, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]],
                 give_up_after: int) -> int:
    if kind not in OBJECT_COLUMNS:  # the name becomes SQL: only the tables we have
        raise ValueError(f"no run metadata table {kind!r} (known: {', '.join(OBJECT_COLUMNS)})")
    found = [str(o["id"]) for o in objects]
    missing = sorted(set(asked) - set(found))
    if objects:
        conn.exec_driver_sql(f"DELETE FROM {kind} WHERE id = ANY(%s::UUID[])", (found,))
        conn.exec_driver_sql(_save_objects_sql(kind), (datetime.now(timezone.utc), *column_values(kind, objects)))
        conn.exec_driver_sql("DELETE FROM object_refresh_queue WHERE kind = %s AND id = ANY(%s::UUID[])", (kind, found))
    if not missing:
        return 0
    conn.exec_driver_sql(
        "UPDATE object_refresh_queue SET attempts = attempts + 1 WHERE kind = %s AND id = ANY(%s::UUID[])",
        (kind, missing),
    )
    given_up = conn.exec_driver_sql(
        "DELETE FROM object_refresh_queue WHERE kind = %s AND attempts >= %s RETURNING id", (kind, give_up_after)
    ).fetchall()
    return len(given_up)


# -- run states ----------------------------------------------------------------------------------

# DuckDB's pending-runs query (duckdb/runs.py, which says why each part is there), in PostgreSQL:
# try_timestamptz() for TRY_CAST, named parameters, GROUP BY by position.
_PENDING = """
WITH fresh AS (
    SELECT right(resource_id, 36)::UUID AS run_id,
           max(coalesce(try_timestamptz(resource->>'prefect.state-timestamp'), occurred)) AS newest
    FROM events
    WHERE archived_at >= %(since)s AND resource_id LIKE %(prefix)s AND resource->>'prefect.state-type' IS NOT NULL
    GROUP BY 1
), retrying AS (
    SELECT run_id, newest_event AS newest FROM run_state_fetches WHERE run_kind = %(kind)s AND attempts > 0
), candidates AS (
    SELECT run_id, max(newest) AS newest FROM (SELECT * FROM fresh UNION ALL SELECT * FROM retrying) c GROUP BY 1
), newest_state AS (
    SELECT run_id, max(timestamp) AS newest FROM run_states
    WHERE run_kind = %(kind)s AND run_id IN (SELECT run_id FROM candidates) GROUP BY 1
)
SELECT c.run_id, c.newest, f.attempts, f.covered_until
FROM candidates c
LEFT JOIN newest_state s ON s.run_id = c.run_id
LEFT JOIN run_state_fetches f ON f.run_kind = %(kind)s AND f.run_id = c.run_id
WHERE c.newest > coalesce(s.newest, '-infinity'::TIMESTAMPTZ)
  AND c.newest > coalesce(f.covered_until, '-infinity'::TIMESTAMPTZ)
ORDER BY c.run_id
LIMIT %(limit)s
"""

_INSERT_STATES = """
INSERT INTO run_states
SELECT * FROM unnest(
    %s::UUID[], %s::TEXT[], %s::UUID[], %s::TEXT[], %s::TEXT[], %s::TIMESTAMPTZ[], %s::TEXT[], %s::JSON[], %s::TEXT[],
    %s::TEXT[], %s::UUID[], %s::TEXT[], %s::TIMESTAMPTZ[], %s::TEXT[], %s::JSON[], %s::TIMESTAMPTZ[])
"""

# DuckDB's INSERT OR REPLACE.
_SAVE_FETCHES = """
INSERT INTO run_state_fetches (run_kind, run_id, fetched_at, states, newest_event, covered_until, attempts)
SELECT * FROM unnest(%s::TEXT[], %s::UUID[], %s::TIMESTAMPTZ[], %s::INTEGER[], %s::TIMESTAMPTZ[], %s::TIMESTAMPTZ[],
                     %s::INTEGER[])
ON CONFLICT (run_kind, run_id) DO UPDATE SET
    fetched_at = EXCLUDED.fetched_at, states = EXCLUDED.states, newest_event = EXCLUDED.newest_event,
    covered_until = EXCLUDED.covered_until, attempts = EXCLUDED.attempts
"""

_NEW_BLOCKS = """
SELECT DISTINCT storage_block_id FROM run_states
WHERE storage_block_id IS NOT NULL AND storage_block_id NOT IN (SELECT id FROM result_storage_blocks)
ORDER BY 1
"""

_SAVE_BLOCKS = """
INSERT INTO result_storage_blocks (id, found, name, block_type_slug, basepath, archived_at)
SELECT * FROM unnest(%s::UUID[], %s::BOOLEAN[], %s::TEXT[], %s::TEXT[], %s::TEXT[], %s::TIMESTAMPTZ[])
ON CONFLICT (id) DO UPDATE SET
    found = EXCLUDED.found, name = EXCLUDED.name, block_type_slug = EXCLUDED.block_type_slug,
    basepath = EXCLUDED.basepath, archived_at = EXCLUDED.archived_at
"""


def states_cursor(conn: sa.Connection) -> datetime | None:
    value = conn.exec_driver_sql("SELECT events_archived_before FROM run_states_progress WHERE id = 1").scalar()
    return to_utc(value) if value is not None else None


def pending_runs(conn: sa.Connection, run_kind: str, since: datetime, limit: int) -> list[PendingRun]:
    params = {"kind": run_kind, "since": since, "prefix": kind_of(run_kind).resource_prefix + "%", "limit": limit}
    rows = conn.exec_driver_sql(_PENDING, params).fetchall()
    return [PendingRun(run_kind, str(run_id), to_utc(newest), attempts or 0, to_utc(covered) if covered else None)
            for run_id, newest, attempts, covered in rows]


def _state_columns(states: Sequence[RunState]) -> tuple[list[Any], ...]:
    return (
        [s.id for s in states], [s.run_kind for s in states], [s.run_id for s in states], [text_value(s.type) for s in states],
        [text_value(s.name) for s in states], [s.timestamp for s in states], [text_value(s.message) for s in states],
        [jsonb_text(s.state_details) for s in states], [s.data_kind for s in states],
        [text_value(s.storage_key) for s in states], [s.storage_block_id for s in states],
        [text_value(s.serializer_type) for s in states], [s.result_expiration for s in states],
        [text_value(s.result_prefect_version) for s in states],
        [jsonb_text(s.state) for s in states], [s.archived_at for s in states],
    )


def save_states(conn: sa.Connection, states: Sequence[RunState], fetches: Sequence[StateFetch]) -> None:
    if states:
        columns = _state_columns(states)
        conn.exec_driver_sql("DELETE FROM run_states WHERE id = ANY(%s::UUID[])", (columns[0],))
        conn.exec_driver_sql(_INSERT_STATES, columns)
    if fetches:
        # A run read twice in one batch: the later read wins, as INSERT OR REPLACE would have it
        # (ON CONFLICT DO UPDATE refuses to touch a row twice in one statement).
        latest = list({(f.run_kind, f.run_id): f for f in fetches}.values())
        conn.exec_driver_sql(_SAVE_FETCHES, (
            [f.run_kind for f in latest], [f.run_id for f in latest], [f.fetched_at for f in latest],
            [f.states for f in latest], [f.newest_event for f in latest], [f.covered_until for f in latest],
            [f.attempts for f in latest],
        ))


def advance_states_cursor(conn: sa.Connection, planned_at: datetime) -> None:
    conn.exec_driver_sql(
        "UPDATE run_states_progress SET events_archived_before = "
        "greatest(coalesce(events_archived_before, %(at)s), %(at)s) WHERE id = 1",
        {"at": planned_at},
    )


def unread_storage_blocks(conn: sa.Connection) -> list[str]:
    return [str(row[0]) for row in conn.exec_driver_sql(_NEW_BLOCKS)]


def save_storage_blocks(conn: sa.Connection, blocks: Sequence[StorageBlock]) -> None:
    now = datetime.now(timezone.utc)
    latest = list({b.id: b for b in blocks}.values())  # the last read of a block wins, as it replaces
    conn.exec_driver_sql(_SAVE_BLOCKS, (
        [b.id for b in latest], [b.found for b in latest], [text_value(b.name) for b in latest],
        [text_value(b.block_type_slug) for b in latest], [text_value(b.basepath) for b in latest], [now] * len(latest),
    ))
