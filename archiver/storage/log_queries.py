"""The SQL of reading logs and artifacts, and of planning their harvest, for every backend.

The statements are the same text on DuckDB and PostgreSQL except for two spellings, which a
Dialect gives: the parameter marker (`?`, `%s`) and "column is one of this list" (DuckDB unnests
a list parameter, PostgreSQL compares with ANY of an array). Writing them once keeps the two
backends' answers from drifting apart (the contract suite holds them to the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from archiver.prefect.events import to_utc
from archiver.storage.logs import HARVESTED_STATE_TYPES, ArtifactQuery, LogQuery


@dataclass(frozen=True)
class Dialect:
    """How one backend spells a parameter and membership in a list parameter."""

    mark: str  # "?" (DuckDB) or "%s" (psycopg)
    list_template: str  # "{col} IN (SELECT unnest({mark}::{type}[]))" or "{col} = ANY({mark}::{type}[])"
    json_text: str  # how a JSON column reads as text: "{col}" or "{col}::text"
    epoch_us: str  # a TIMESTAMPTZ column as microseconds since the epoch (a BIGINT)

    def any_of(self, column: str, sql_type: str) -> str:
        return self.list_template.format(col=column, mark=self.mark, type=sql_type)

    def text(self, column: str) -> str:
        return self.json_text.format(col=column)


# PostgreSQL's extract(epoch) is numeric since 14, so exact to the microsecond.
DUCKDB = Dialect("?", "{col} IN (SELECT unnest({mark}::{type}[]))", "{col}", "epoch_us({col})")
POSTGRESQL = Dialect("%s", "{col} = ANY({mark}::{type}[])", "{col}::text", "(extract(epoch FROM {col}) * 1000000)::bigint")


# What a log line shows (the CLI's text output): these columns, without parsing the whole object.
LINE_COLUMNS = ("id", "timestamp", "level", "message")


# What each row of logs_select holds: the whole log (JSON text); LINE_COLUMNS; or those columns as
# the cheapest values a driver makes, str and int (id text, timestamp in µs since the epoch): a
# UUID and an aware datetime per row were most of `logs RUN_ID`'s time (ArchiveReader.log_lines).
LogShape = Literal["whole", "columns", "line"]


def _selected(shape: LogShape, d: Dialect) -> str:
    if shape == "whole":
        return d.text("log")
    if shape == "line":
        return f"id::text, {d.epoch_us.format(col='timestamp')}, level, message"
    return ", ".join(LINE_COLUMNS)


def log_dicts(rows: list[Any], whole: bool) -> list[dict[str, Any]]:
    """Rows of logs_select (shape "whole", or "columns" if not `whole`) as dicts: the whole logs,
    or LINE_COLUMNS with the id as text and the timestamp in UTC."""
    if whole:
        return [json.loads(row[0]) for row in rows]
    return [dict(zip(LINE_COLUMNS, (str(i), to_utc(t), level, message), strict=True)) for i, t, level, message in rows]


def logs_select(query: LogQuery, d: Dialect, shape: LogShape = "whole") -> tuple[str, list[Any]]:
    """The archived logs `query` asks for, in timestamp then id order, each row as `shape` says."""
    where: list[str] = []
    params: list[Any] = []
    if query.run_id is not None:
        where.append(f"(flow_run_id = {d.mark} OR task_run_id = {d.mark})")
        params += [str(query.run_id)] * 2
    if query.flow_run_ids is not None:
        where.append(d.any_of("flow_run_id", "UUID"))
        params.append([str(i) for i in query.flow_run_ids])
    if query.task_run_ids is not None:
        where.append(d.any_of("task_run_id", "UUID"))
        params.append([str(i) for i in query.task_run_ids])
    if query.task_run_is_null is not None:
        where.append("task_run_id IS NULL" if query.task_run_is_null else "task_run_id IS NOT NULL")
    for column, op, value in (("level", ">=", query.level_ge), ("level", "<=", query.level_le),
                              ("timestamp", ">=", query.after), ("timestamp", "<=", query.before)):
        if value is not None:
            where.append(f"{column} {op} {d.mark}")
            params.append(value)
    if query.text:
        # strpos, not LIKE: the user's text may hold % or _, which LIKE would read as wildcards.
        where.append(f"strpos(lower(message), lower({d.mark})) > 0")
        params.append(query.text)
    if query.after_key is not None:
        at, last = query.after_key
        beyond = "<" if query.descending else ">"
        where.append(f"(timestamp {beyond} {d.mark} OR (timestamp = {d.mark} AND id {beyond} {d.mark}))")
        params += [at, at, str(last)]
    order = "DESC" if query.descending else "ASC"
    selected = _selected(shape, d)
    sql = (f"SELECT {selected} FROM logs {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY timestamp {order}, id {order} LIMIT {d.mark} OFFSET {d.mark}")
    return sql, [*params, query.limit, query.offset]


def artifacts_select(query: ArtifactQuery, d: Dialect) -> tuple[str, list[Any]]:
    """The archived artifacts `query` asks for, as (whole artifact JSON text,), oldest first by created, then id."""
    where: list[str] = []
    params: list[Any] = []
    for column, sql_type, values in (("id", "UUID", query.ids), ("flow_run_id", "UUID", query.flow_run_ids),
                                     ("task_run_id", "UUID", query.task_run_ids), ("key", "VARCHAR", query.keys),
                                     ("type", "VARCHAR", query.types)):
        if values is not None:
            where.append(d.any_of(column, sql_type if sql_type == "UUID" else "TEXT"))
            params.append([str(v) for v in values])
    order = "DESC NULLS LAST" if query.newest_first else "ASC NULLS FIRST"
    sql = (f"SELECT {d.text('artifact')} FROM artifacts {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY created {order}, id {order.split()[0]} LIMIT {d.mark} OFFSET {d.mark}")
    return sql, [*params, query.limit, query.offset]


def run_counts(d: Dialect) -> str:
    """Logs and artifacts of one run (flow run or task run), parameters: the id four times."""
    m = d.mark
    return (f"SELECT (SELECT count(*) FROM logs WHERE flow_run_id = {m} OR task_run_id = {m}), "
            f"(SELECT count(*) FROM artifacts WHERE flow_run_id = {m} OR task_run_id = {m})")


def run_log_ids(d: Dialect) -> str:
    """Ids of the archived logs of one run at a level or above, in id order; parameters: the run's id
    (twice), the level (0 for all)."""
    return (f"SELECT id FROM logs WHERE (flow_run_id = {d.mark} OR task_run_id = {d.mark}) AND level >= {d.mark} "
            "ORDER BY id")


def run_artifact_ids(d: Dialect) -> str:
    """Ids of the archived artifacts of one run, in id order; parameter: the run's id (twice)."""
    return f"SELECT id FROM artifacts WHERE flow_run_id = {d.mark} OR task_run_id = {d.mark} ORDER BY id"


def harvested_runs(d: Dialect) -> str:
    """Settled runs that ended (or last changed state) in [since, until]; parameters: since, until."""
    return (f"SELECT run_kind, run_id FROM log_progress WHERE settled "
            f"AND coalesce(ended, state_seen) BETWEEN {d.mark} AND {d.mark} ORDER BY run_kind, run_id")


# The runs whose logs need reading: flow runs, and task runs outside any flow run (a flow run's
# logs include its task runs'), that have reached a state in which they may have logged, and
# either had their metadata refreshed since the last pass began with a state newer than their
# last read knew of, or were never settled (running, or ended within the late-batch horizon).
# Metadata, not events, because the metadata pass (ingest.metadata) just read each run named by a
# new event, with its state and end_time. Read in batches by (run_kind, id) keyset, so one pass
# over every run of a large archive holds one batch at a time. Parameters: progress_params.
_STATES = ", ".join(f"'{t}'" for t in HARVESTED_STATE_TYPES)


def pending_runs(d: Dialect) -> str:
    m = d.mark
    return f"""
WITH runs AS (
    SELECT 'flow_run' AS run_kind, id, state_type, state_timestamp, end_time, archived_at FROM flow_runs
    UNION ALL
    SELECT 'task_run' AS run_kind, id, state_type, state_timestamp, end_time, archived_at FROM task_runs
    WHERE flow_run_id IS NULL
), candidates AS (
    SELECT r.run_kind, r.id FROM runs r
    LEFT JOIN log_progress p ON p.run_kind = r.run_kind AND p.run_id = r.id
    WHERE r.archived_at >= {m} AND r.state_type IN ({_STATES})
      AND (p.run_id IS NULL OR r.state_timestamp > p.state_seen OR p.state_seen IS NULL)
    UNION
    SELECT run_kind, run_id FROM log_progress WHERE NOT settled
)
SELECT r.run_kind, r.id, r.state_type, r.state_timestamp, r.end_time, p.logs_after, p.run_id IS NOT NULL
FROM candidates c
JOIN runs r ON r.run_kind = c.run_kind AND r.id = c.id
LEFT JOIN log_progress p ON p.run_kind = c.run_kind AND p.run_id = c.id
WHERE (r.state_type IN ({_STATES}) OR p.run_id IS NOT NULL)
  AND (c.run_kind > {m} OR (c.run_kind = {m} AND c.id > {m}::UUID))
ORDER BY r.run_kind, r.id
LIMIT {m}
"""


# Before every run in (run_kind, id) order: the first batch's keyset.
FIRST_RUN = ("", "00000000-0000-0000-0000-000000000000")


def progress_params(since: datetime, limit: int, after: tuple[str, str] | None = None) -> list[Any]:
    """pending_runs' parameters: runs archived since `since`, after the (run_kind, run_id) `after`."""
    kind, run = after or FIRST_RUN
    return [since, kind, kind, run, limit]
