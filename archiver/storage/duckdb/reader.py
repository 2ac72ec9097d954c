"""The DuckDB archive's reader: each call opens the file read-only, briefly, and lets go.

While a sync holds the file to commit, no other process can open it at all (connect.py), so a
read waits up to its timeout and a reader never keeps the file between calls — except inside a
session(), which `serve` opens for one request. Imported by readers inside flows on their first
read: neither SQLAlchemy nor the ingest machinery comes with it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb

from archiver.errors import ArchiveError, QueryTimeout, RunNotFound
from archiver.prefect.events import EVENT_COLUMNS, event_to_api, format_timestamp, to_utc
from archiver.prefect.filters import EventFilter
from archiver.prefect.runs import RUN_KINDS
from archiver.storage import log_queries
from archiver.storage.browse import Dialect, Facets
from archiver.storage.duckdb import queries
from archiver.storage.duckdb.connect import open_reader, scalar
from archiver.storage.duckdb.console import run_sql
from archiver.storage.duckdb.facets import read_facets, read_first_page
from archiver.storage.duckdb.lock import lock_is_held
from archiver.storage.duckdb.search import count_events, has_spans, read_page
from archiver.storage.logs import ArtifactQuery, LogQuery, PredatesLogs, RunLogCounts
from archiver.storage.reader import (
    ArchiveReader,
    ArchiveStatus,
    LastSync,
    Page,
    Position,
    RunHistory,
    SqlResult,
    run_state_from_row,
)
from archiver.storage.writer import ORPHANED_RUN_ERROR

# A run's states: its archived state records, then the state-change events of those whose record
# was not archived (the server dropped them first), with the result's storage block when known.
_STATES_SQL = """
SELECT s.id, s.type, s.name, s.timestamp, s.message, s.state_details, s.data_kind, s.storage_key, s.storage_block_id,
       s.serializer_type, s.result_expiration, s.result_prefect_version, 'state' AS source,
       b.found, b.name, b.block_type_slug, b.basepath, s.state->'data'->'serializer'
FROM run_states s LEFT JOIN result_storage_blocks b ON b.id = s.storage_block_id
WHERE s.run_kind = $2 AND s.run_id = $1
UNION ALL
SELECT id, resource->>'prefect.state-type', resource->>'prefect.state-name',
       coalesce(TRY_CAST(resource->>'prefect.state-timestamp' AS TIMESTAMPTZ), occurred),
       nullif(coalesce(payload->'validated_state'->>'message', resource->>'prefect.state-message'), ''),
       NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, 'event', NULL, NULL, NULL, NULL, NULL
FROM events
WHERE occurred BETWEEN $4 AND $5 AND id IN (SELECT unnest($3::UUID[])) AND resource_id = $6
  AND resource->>'prefect.state-type' IS NOT NULL
  AND id NOT IN (SELECT id FROM run_states WHERE run_kind = $2 AND run_id = $1)
ORDER BY 4, 1
"""
# The second part is the {kind}_states view's row for each of the run's own state events
# (migrations/duckdb/0003_history_views.sql, state_events), read from events directly: $3 are the
# ids of the events whose resource the run is ($6), read first from event_resources, and $4..$5
# when they occurred, so events' zone maps skip all but a few row groups. The view alone read every
# run's state events (1M events: 260 ms against 34 ms); the view with the ids still read the whole
# id column of events (10M events, a fresh connection: 65 ms of CPU against 16 ms this way).
# The ids are a query of their own, read between the run's first and last event (resource_spans,
# migration 0011: event_resources' zone maps on `occurred` skip the rest); an archive from before
# 0011 has an index on resource_id instead, which DuckDB probes only for the id alone (inside the
# statement, or with `AND role = ''`, it scanned event_resources).
_OWN_EVENTS_SQL = "SELECT event_id, role, occurred FROM event_resources WHERE resource_id = $1"
_OWN_EVENTS_IN_SPAN_SQL = _OWN_EVENTS_SQL + (
    " AND occurred BETWEEN (SELECT first_occurred FROM resource_spans WHERE resource_id = $1)"
    " AND (SELECT last_occurred FROM resource_spans WHERE resource_id = $1)")
_RUN_TABLES = tuple((kind.name, kind.collection, kind.resource_prefix) for kind in RUN_KINDS)
# UTC days by epoch arithmetic, as the views cut them (0003_history_views.sql): no ICU, no TimeZone.
_DIALECT = Dialect(object_text="{}", p50="quantile_cont({}, 0.5)", p95="quantile_cont({}, 0.95)",
                   seconds_between="epoch({0} - {1})", utc_day="CAST(make_timestamp(epoch_us({})) AS DATE)")


class DuckDBReader(ArchiveReader):
    """Reads the archive file at `path`, waiting up to `timeout` for a committing writer."""

    _dialect = _DIALECT

    def __init__(self, path: Path, timeout: timedelta) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: duckdb.DuckDBPyConnection | None = None  # inside a session: its connection

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._conn is not None:
            yield self._conn
            return
        conn = open_reader(self.path, self.timeout)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def session(self, time_limit: timedelta | None = None) -> Iterator[DuckDBReader]:
        if self._conn is not None:  # already a session: share its connection (and its time limit)
            yield self
            return
        session = DuckDBReader(self.path, self.timeout)
        session._conn = conn = open_reader(self.path, self.timeout)
        done = threading.Event()
        seconds = time_limit.total_seconds() if time_limit is not None else 0.0
        if seconds > 0:
            threading.Thread(target=_interrupt_after, args=(conn, seconds, done), daemon=True).start()
        try:
            yield session
        except duckdb.InterruptException:
            raise QueryTimeout(f"reading archive {self.path} took longer than {seconds:g}s and was stopped") from None
        finally:
            done.set()
            session._conn = None
            conn.close()

    # -- events ------------------------------------------------------------------------------------

    def event(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1", [str(event_id)]).fetchone()
        return event_to_api(*row) if row else None

    def page(self, search: EventFilter, limit: int, after: Position | None = None, total: int | None = None) -> Page:
        with self._connection() as conn:
            return read_page(conn, search, limit, after=after, total=total)

    def count(self, search: EventFilter) -> int:
        with self._connection() as conn:
            return count_events(conn, search)

    def facets(self, search: EventFilter, limit: int = 10) -> Facets:
        with self._connection() as conn:
            facets = read_facets(conn, search, limit)
        return self._named(facets)

    def first_page(self, search: EventFilter, limit: int, facets_up_to: int,
                   facet_limit: int = 10) -> tuple[Page, Facets | None]:
        if not (search.related or search.any_resource):
            # Without a resource filter the count and keys are cheap on their own (zone maps, a
            # top-N): gathering every match of a busy week first would cost more than it saves.
            return super().first_page(search, limit, facets_up_to, facet_limit)
        with self._connection() as conn:
            page, facets = read_first_page(conn, search, limit, facet_limit, facets_up_to)
        return page, self._named(facets) if facets is not None else None

    def _browse_rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        with self._connection() as conn:
            rows = conn.execute(queries.BUCKET_COUNTS, queries.bucket_params(since, until, width)).fetchall()
        return queries.bucket_starts(rows, width)

    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        with self._connection() as conn:
            value = scalar(conn, queries.NEWEST_BEFORE, [moment])
        return to_utc(value) if value is not None else None

    # -- the archive's state ---------------------------------------------------------------------------

    def high_water_mark(self) -> datetime | None:
        with self._connection() as conn:
            return _mark(conn)

    def gaps(self) -> list[tuple[datetime, datetime]]:
        with self._connection() as conn:
            rows = conn.execute(queries.GAPS).fetchall()
        return [(to_utc(since), to_utc(until)) for since, until in rows]

    def status(self, now: datetime | None = None) -> ArchiveStatus:
        now = now or datetime.now(timezone.utc)
        with self._connection() as conn:
            events = scalar(conn, "SELECT count(*) FROM events")
            mark = _mark(conn)
            last = conn.execute(
                "SELECT id, started, finished, outcome, error, inserted, fetched FROM syncs "
                "WHERE kind = 'sync' ORDER BY started DESC LIMIT 1"
            ).fetchone()
            last_ok = scalar(conn, "SELECT max(finished) FROM syncs WHERE kind = 'sync' AND outcome = 'ok'")
            gaps = conn.execute(queries.GAPS).fetchall()
            try:
                quarantined, resolved = conn.execute(
                    "SELECT count(*) FILTER (resolved IS NULL), count(*) FILTER (resolved IS NOT NULL) FROM quarantine"
                ).fetchone() or (0, 0)
            except duckdb.BinderException:  # an archive from before migration 0006: no item resolved yet
                quarantined, resolved = scalar(conn, "SELECT count(*) FROM quarantine"), 0
        return ArchiveStatus(
            archive=str(self.path),
            events=events,
            high_water_mark=mark,
            lag=now - mark if mark else None,
            last_sync=self._last_sync(last) if last else None,
            last_success=to_utc(last_ok) if last_ok else None,
            gaps=tuple((to_utc(since), to_utc(until)) for since, until in gaps),
            quarantined=quarantined,
            quarantine_resolved=resolved,
        )

    def _last_sync(self, row: tuple[Any, ...]) -> LastSync:
        run_id, started, finished, outcome, error, inserted, fetched = row
        if outcome == "running" and not lock_is_held(self.path):
            # Every writer holds the sync lock while its run is 'running': with the lock free, the
            # process is gone (the next writer marks the row so in the ledger).
            outcome, error = "interrupted", ORPHANED_RUN_ERROR
        return LastSync(uuid.UUID(str(run_id)), to_utc(started), to_utc(finished) if finished else None,
                        outcome, error, inserted, fetched)

    # -- runs ----------------------------------------------------------------------------------------

    def flow_run(self, flow_run_id: uuid.UUID) -> dict[str, Any] | None:
        with self._connection() as conn:
            try:
                value = scalar(conn, "SELECT object FROM flow_runs WHERE id = $1", [str(flow_run_id)])
            except duckdb.CatalogException:  # an archive from before run metadata
                return None
        return json.loads(value) if value else None

    def run_history(self, run_id: uuid.UUID) -> RunHistory:
        wanted = str(run_id)
        with self._connection() as conn:
            mark = _mark(conn)
            own_events = _OWN_EVENTS_IN_SPAN_SQL if has_spans(conn) else _OWN_EVENTS_SQL
            for kind, table, prefix in _RUN_TABLES:
                try:
                    own = [(str(event_id), occurred) for event_id, role, occurred
                           in conn.execute(own_events, [prefix + wanted]).fetchall() if role == ""]
                    times = [occurred for _, occurred in own]
                    rows = conn.execute(_STATES_SQL, [wanted, kind, [i for i, _ in own], min(times, default=None),
                                                      max(times, default=None), prefix + wanted]).fetchall()
                except duckdb.CatalogException:
                    raise ArchiveError(
                        f"archive {self.path} predates run states: run `prefect-archiver sync` once to upgrade it"
                    ) from None
                name = scalar(conn, f"SELECT name FROM {table} WHERE id = $1", [wanted])
                if rows or name is not None:
                    return RunHistory(kind, wanted, name, [run_state_from_row(row) for row in rows], mark)
        ends = (f"which ends at its high-water mark {format_timestamp(mark)}: a run newer than that is archived by "
                "the next `prefect-archiver sync`") if mark else "which no sync has filled yet"
        raise RunNotFound(f"no flow run or task run with id {wanted} in the archive at {self.path}, {ends}")

    # -- run logs and artifacts ---------------------------------------------------------------------

    def _logs_query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except duckdb.CatalogException:
                raise PredatesLogs(f"archive {self.path} predates run logs: run `prefect-archiver sync` once to "
                                   "upgrade it") from None

    def logs(self, query: LogQuery, whole: bool = True) -> list[dict[str, Any]]:
        rows = self._logs_query(*log_queries.logs_select(query, log_queries.DUCKDB, "whole" if whole else "columns"))
        return log_queries.log_dicts(rows, whole)

    def log_lines(self, query: LogQuery) -> list[tuple[str, int, int, str | None]]:
        return self._logs_query(*log_queries.logs_select(query, log_queries.DUCKDB, "line"))

    def artifacts(self, query: ArtifactQuery) -> list[dict[str, Any]]:
        sql, params = log_queries.artifacts_select(query, log_queries.DUCKDB)
        return [json.loads(row[0]) for row in self._logs_query(sql, params)]

    def run_log_counts(self, run_id: uuid.UUID) -> RunLogCounts:
        with self._connection() as conn:
            try:
                row = conn.execute(log_queries.run_counts(log_queries.DUCKDB), [str(run_id)] * 4).fetchone()
            except duckdb.CatalogException:  # an archive from before logs: none archived yet
                return RunLogCounts(0, 0)
        return RunLogCounts(int(row[0]), int(row[1])) if row else RunLogCounts(0, 0)

    def harvested_runs(self, since: datetime, until: datetime) -> list[tuple[str, str]]:
        try:
            rows = self._logs_query(log_queries.harvested_runs(log_queries.DUCKDB), [since, until])
        except PredatesLogs:  # an archive from before logs: no run harvested yet
            return []
        return [(str(kind), str(run)) for kind, run in rows]

    def run_log_ids(self, run_id: uuid.UUID, level_ge: int | None = None) -> tuple[set[str], set[str]]:
        d = log_queries.DUCKDB
        logs = self._logs_query(log_queries.run_log_ids(d), [str(run_id), str(run_id), level_ge or 0])
        artifacts = self._logs_query(log_queries.run_artifact_ids(d), [str(run_id)] * 2)
        return {str(r[0]) for r in logs}, {str(r[0]) for r in artifacts}

    # -- the SQL console -------------------------------------------------------------------------------

    def sql(self, query: str) -> AbstractContextManager[SqlResult]:
        return run_sql(self.path, query, self.timeout)


def _mark(conn: duckdb.DuckDBPyConnection) -> datetime | None:
    mark = scalar(conn, queries.MARK)
    return to_utc(mark) if mark else None


def _interrupt_after(conn: duckdb.DuckDBPyConnection, seconds: float, done: threading.Event) -> None:
    """Interrupt `conn`'s query once `seconds` have passed, and again until it has stopped.

    DuckDB only sees an interrupt while a query is executing, and a session runs several queries:
    one interrupt can land between them (or while one is still being planned) and be lost.
    """
    if done.wait(seconds):
        return
    while not done.is_set():
        try:
            conn.interrupt()
        except duckdb.Error:  # the session ended and closed the connection meanwhile
            return
        done.wait(0.01)
