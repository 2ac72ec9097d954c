"""The DuckDB SQL of run metadata and run states, each statement run on the writer's connection.

DuckDBWriter opens the transaction; these functions only say what to run in it. Rows go in as
lists unnested in one INSERT … SELECT (DuckDB's bulk path: one statement per batch, not per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from archiver.prefect.events import compact_json, to_utc
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage.writer import PendingRun, RunState, StateFetch, StorageBlock

# -- run metadata --------------------------------------------------------------------------------

# Typed columns of each metadata table, taken from the object as the API returned it (`o`). Every
# cast is a TRY_CAST: a value the server sent that has no such type (a count that is not a number,
# a time outside the years 1-9999, which DuckDB would store but Python cannot read back) leaves
# that column NULL and the whole object in `object`, instead of failing the refresh on every sync.
_TIMESTAMP_RANGE = "BETWEEN -62135596800 AND 253402300799.999999"  # epoch seconds of 0001-01-01 .. 9999-12-31Z


def _as(expr: str, sql_type: str) -> str:
    cast = f"TRY_CAST({expr} AS {sql_type})"
    return f"CASE WHEN epoch({cast}) {_TIMESTAMP_RANGE} THEN {cast} END" if sql_type == "TIMESTAMPTZ" else cast


# What flow runs and task runs both have (Prefect's shared run fields).
_RUN_COLUMNS = {
    "name": "o->>'name'", "state_type": "o->>'state_type'", "state_name": "o->>'state_name'",
    "state_timestamp": _as("o->'state'->>'timestamp'", "TIMESTAMPTZ"), "run_count": _as("o->>'run_count'", "INTEGER"),
    "expected_start_time": _as("o->>'expected_start_time'", "TIMESTAMPTZ"),
    "start_time": _as("o->>'start_time'", "TIMESTAMPTZ"), "end_time": _as("o->>'end_time'", "TIMESTAMPTZ"),
    "total_run_time": _as("o->>'total_run_time'", "DOUBLE"), "tags": _as("o->'tags'", "VARCHAR[]"),
}
OBJECT_COLUMNS: dict[str, dict[str, str]] = {
    "flows": {"name": "o->>'name'", "tags": _as("o->'tags'", "VARCHAR[]")},
    "deployments": {
        "name": "o->>'name'", "flow_id": _as("o->>'flow_id'", "UUID"), "work_pool_name": "o->>'work_pool_name'",
        "work_queue_name": "o->>'work_queue_name'", "paused": _as("o->>'paused'", "BOOLEAN"), "status": "o->>'status'",
        "tags": _as("o->'tags'", "VARCHAR[]"),
    },
    "work_pools": {
        "name": "o->>'name'", "type": "o->>'type'", "status": "o->>'status'", "is_paused": _as("o->>'is_paused'", "BOOLEAN"),
    },
    "flow_runs": {
        **_RUN_COLUMNS,
        "flow_id": _as("o->>'flow_id'", "UUID"), "deployment_id": _as("o->>'deployment_id'", "UUID"),
        "work_pool_id": _as("o->>'work_pool_id'", "UUID"), "work_pool_name": "o->>'work_pool_name'",
        "work_queue_name": "o->>'work_queue_name'", "parent_task_run_id": _as("o->>'parent_task_run_id'", "UUID"),
        "parameters": "o->'parameters'",
    },
    "task_runs": {**_RUN_COLUMNS, "flow_run_id": _as("o->>'flow_run_id'", "UUID"), "task_key": "o->>'task_key'"},
}

# The objects a batch's new events name (prefect.flow-run.<uuid>, …), queued for a metadata refresh
# in the same transaction as the events; object_kind() is the macro from migration 0002.
QUEUE_OBJECTS = """
INSERT OR IGNORE INTO object_refresh_queue
SELECT DISTINCT object_kind(r), right(r, 36)::UUID, $2, 0
FROM (SELECT unnest($1::VARCHAR[]) AS r)
WHERE object_kind(r) <> ''
"""


def _save_objects_sql(kind: str) -> str:
    columns = {"id": "(o->>'id')::UUID", **OBJECT_COLUMNS[kind], "created": _as("o->>'created'", "TIMESTAMPTZ"),
               "updated": _as("o->>'updated'", "TIMESTAMPTZ"), "object": "o", "archived_at": "$2"}
    return (
        f"INSERT INTO {kind} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns.values())} FROM (SELECT unnest($1::JSON[]) AS o)"
    )


def queued_objects(conn: sa.Connection, kind: str, after: str | None, limit: int) -> list[str]:
    rows = conn.exec_driver_sql(
        "SELECT id FROM object_refresh_queue WHERE kind = $1 AND ($2::UUID IS NULL OR id > $2::UUID) "
        "ORDER BY id LIMIT $3",
        (kind, after, limit),
    ).fetchall()
    return [str(row[0]) for row in rows]


def save_objects(conn: sa.Connection, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]],
                 give_up_after: int) -> int:
    if kind not in OBJECT_COLUMNS:  # the name becomes SQL: only the tables we have
        raise ValueError(f"no run metadata table {kind!r} (known: {', '.join(OBJECT_COLUMNS)})")
    found = [str(o["id"]) for o in objects]
    missing = sorted(set(asked) - set(found))
    if objects:
        conn.exec_driver_sql(f"DELETE FROM {kind} WHERE id IN (SELECT unnest($1::UUID[]))", (found,))
        conn.exec_driver_sql(_save_objects_sql(kind), ([compact_json(o) for o in objects], datetime.now(timezone.utc)))
        conn.exec_driver_sql(
            "DELETE FROM object_refresh_queue WHERE kind = $1 AND id IN (SELECT unnest($2::UUID[]))", (kind, found)
        )
    if not missing:
        return 0
    conn.exec_driver_sql(
        "UPDATE object_refresh_queue SET attempts = attempts + 1 WHERE kind = $1 AND id IN (SELECT unnest($2::UUID[]))",
        (kind, missing),
    )
    given_up = conn.exec_driver_sql(
        "DELETE FROM object_refresh_queue WHERE kind = $1 AND attempts >= $2 RETURNING id", (kind, give_up_after)
    ).fetchall()
    return len(given_up)


# -- run states ----------------------------------------------------------------------------------


# Runs with state events archived since the cursor, and runs still being retried; pending when
# their newest state event is newer than their newest archived state and than what an earlier
# read covered. The event columns are those of the flow_run_states / task_run_states views
# (migration 0003), read from `events` directly so the scan can skip by archived_at. The fetches
# are joined as a subquery: duckdb 2.0.1 drops the LIMIT of `LEFT JOIN run_state_fetches f ON
# f.run_kind = $1 AND …` while that table is empty (measured: every pending run for LIMIT 3) — the
# first pass after an upgrade, the one MAX_RUNS_PER_PASS is there to bound.
_PENDING = """
WITH fresh AS (
    SELECT right(resource_id, 36)::UUID AS run_id,
           max(coalesce(TRY_CAST(resource->>'prefect.state-timestamp' AS TIMESTAMPTZ), occurred)) AS newest
    FROM events
    WHERE archived_at >= $2 AND resource_id LIKE $3 AND resource->>'prefect.state-type' IS NOT NULL
    GROUP BY ALL
), retrying AS (
    SELECT run_id, newest_event AS newest FROM run_state_fetches WHERE run_kind = $1 AND attempts > 0
), candidates AS (
    SELECT run_id, max(newest) AS newest FROM (SELECT * FROM fresh UNION ALL SELECT * FROM retrying) GROUP BY ALL
), newest_state AS (
    SELECT run_id, max(timestamp) AS newest FROM run_states
    WHERE run_kind = $1 AND run_id IN (SELECT run_id FROM candidates) GROUP BY ALL
)
SELECT c.run_id, c.newest, f.attempts, f.covered_until
FROM candidates c
LEFT JOIN newest_state s ON s.run_id = c.run_id
LEFT JOIN (SELECT * FROM run_state_fetches WHERE run_kind = $1) f ON f.run_id = c.run_id
WHERE c.newest > coalesce(s.newest, '-infinity'::TIMESTAMPTZ)
  AND c.newest > coalesce(f.covered_until, '-infinity'::TIMESTAMPTZ)
ORDER BY c.run_id
LIMIT $4
"""

_INSERT_STATES = """
INSERT INTO run_states
SELECT * FROM (SELECT
    unnest($1::UUID[]), unnest($2::VARCHAR[]), unnest($3::UUID[]), unnest($4::VARCHAR[]), unnest($5::VARCHAR[]),
    unnest($6::TIMESTAMPTZ[]), unnest($7::VARCHAR[]), unnest($8::JSON[]), unnest($9::VARCHAR[]), unnest($10::VARCHAR[]),
    unnest($11::UUID[]), unnest($12::VARCHAR[]), unnest($13::TIMESTAMPTZ[]), unnest($14::VARCHAR[]),
    unnest($15::JSON[]), unnest($16::TIMESTAMPTZ[]))
"""

_SAVE_FETCHES = """
INSERT OR REPLACE INTO run_state_fetches
SELECT * FROM (SELECT unnest($1::VARCHAR[]), unnest($2::UUID[]), unnest($3::TIMESTAMPTZ[]), unnest($4::INTEGER[]),
    unnest($5::TIMESTAMPTZ[]), unnest($6::TIMESTAMPTZ[]), unnest($7::INTEGER[]))
"""

_NEW_BLOCKS = """
SELECT DISTINCT storage_block_id FROM run_states
WHERE storage_block_id IS NOT NULL AND storage_block_id NOT IN (SELECT id FROM result_storage_blocks)
ORDER BY ALL
"""


def states_cursor(conn: sa.Connection) -> datetime | None:
    value = conn.exec_driver_sql("SELECT events_archived_before FROM run_states_progress WHERE id = 1").scalar()
    return to_utc(value) if value is not None else None


def pending_runs(conn: sa.Connection, run_kind: str, since: datetime, limit: int) -> list[PendingRun]:
    rows = conn.exec_driver_sql(_PENDING, (run_kind, since, kind_of(run_kind).resource_prefix + "%", limit)).fetchall()
    return [PendingRun(run_kind, str(run_id), to_utc(newest), attempts or 0, to_utc(covered) if covered else None)
            for run_id, newest, attempts, covered in rows]


def _state_columns(states: Sequence[RunState]) -> tuple[list[Any], ...]:
    return (
        [s.id for s in states], [s.run_kind for s in states], [s.run_id for s in states], [s.type for s in states],
        [s.name for s in states], [s.timestamp for s in states], [s.message for s in states],
        [compact_json(s.state_details) for s in states], [s.data_kind for s in states], [s.storage_key for s in states],
        [s.storage_block_id for s in states], [s.serializer_type for s in states],
        [s.result_expiration for s in states], [s.result_prefect_version for s in states],
        [compact_json(s.state) for s in states], [s.archived_at for s in states],
    )


def save_states(conn: sa.Connection, states: Sequence[RunState], fetches: Sequence[StateFetch]) -> None:
    if states:
        columns = _state_columns(states)
        conn.exec_driver_sql("DELETE FROM run_states WHERE id IN (SELECT unnest($1::UUID[]))", (columns[0],))
        conn.exec_driver_sql(_INSERT_STATES, columns)
    if fetches:
        conn.exec_driver_sql(_SAVE_FETCHES, (
            [f.run_kind for f in fetches], [f.run_id for f in fetches], [f.fetched_at for f in fetches],
            [f.states for f in fetches], [f.newest_event for f in fetches], [f.covered_until for f in fetches],
            [f.attempts for f in fetches],
        ))


def advance_states_cursor(conn: sa.Connection, planned_at: datetime) -> None:
    conn.exec_driver_sql(
        "UPDATE run_states_progress SET events_archived_before = "
        "greatest(coalesce(events_archived_before, $1), $1) WHERE id = 1",
        (planned_at,),
    )


def unread_storage_blocks(conn: sa.Connection) -> list[str]:
    return [str(row[0]) for row in conn.exec_driver_sql(_NEW_BLOCKS)]


def save_storage_blocks(conn: sa.Connection, blocks: Sequence[StorageBlock]) -> None:
    now = datetime.now(timezone.utc)
    for b in blocks:
        conn.exec_driver_sql("INSERT OR REPLACE INTO result_storage_blocks VALUES ($1, $2, $3, $4, $5, $6)",
                             (b.id, b.found, b.name, b.block_type_slug, b.basepath, now))
