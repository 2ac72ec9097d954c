"""The PostgreSQL archive's reader: the same answers as DuckDB's, from a database many may read.

Readers never wait for the writer: PostgreSQL's MVCC shows each statement (and each session(),
one REPEATABLE READ snapshot) the batches committed before it began, whole, and a read takes no
lock a writer's batch waits on. Only an exclusive table lock (a migration upgrading the schema)
makes a read wait, for at most the reader's timeout (lock_timeout → ArchiveBusy). In turn a
reader must never hold a transaction open longer than one call or one session(): an open
snapshot keeps VACUUM from reclaiming what the writer replaces. Between calls a reader keeps its
connections idle, outside any transaction (pool.py).

Events come back in the API's JSON shape from the text of their JSON columns (`::text`): on a
`json` column that is the text the writer stored, in the server's key order; JSONB would hand
back its own key order and numbers (1e20 as 100000000000000000000).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from archiver.errors import ArchiveBusy, QueryTimeout, RunNotFound
from archiver.prefect.events import event_to_api, format_timestamp, to_utc
from archiver.prefect.filters import EventFilter
from archiver.prefect.runs import RUN_KINDS
from archiver.storage import log_queries
from archiver.storage.browse import Dialect, Facets
from archiver.storage.logs import ArtifactQuery, LogQuery, PredatesLogs, RunLogCounts
from archiver.storage.postgresql import pool, queries
from archiver.storage.postgresql.console import run_sql
from archiver.storage.postgresql.facets import read_facets
from archiver.storage.postgresql.search import EVENT_COLUMNS, count_events, read_page
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

T = TypeVar("T")
Conn = psycopg.Connection[Any]

# As DuckDB's reader: a run's archived state records, then the state-change events of those whose
# record was not archived, with the result's storage block when known; JSON as text.
_STATES_SQL = """
SELECT s.id, s.type, s.name, s.timestamp, s.message, s.state_details::text, s.data_kind, s.storage_key,
       s.storage_block_id, s.serializer_type, s.result_expiration, s.result_prefect_version, 'state' AS source,
       b.found, b.name, b.block_type_slug, b.basepath, (s.state->'data'->'serializer')::text
FROM run_states s LEFT JOIN result_storage_blocks b ON b.id = s.storage_block_id
WHERE s.run_kind = %(kind)s AND s.run_id = %(run)s
UNION ALL
SELECT event_id, state_type, state_name, timestamp, message, NULL, 'unknown', NULL, NULL, NULL, NULL, NULL, 'event',
       NULL, NULL, NULL, NULL, NULL
FROM {kind}_states
WHERE {kind}_id = %(run)s AND event_id NOT IN (SELECT id FROM run_states WHERE run_kind = %(kind)s AND run_id = %(run)s)
  AND event_id IN (SELECT event_id FROM event_resources WHERE resource_id = %(resource)s AND role = '')
ORDER BY 4, 1
"""
# As DuckDB's: the last condition finds the run's events through event_resources' index, not the view's scan.
_RUN_TABLES = tuple((kind.name, kind.collection, kind.resource_prefix) for kind in RUN_KINDS)
_DIALECT = Dialect(object_text="{}::text", p50="percentile_cont(0.5) WITHIN GROUP (ORDER BY {})",
                   p95="percentile_cont(0.95) WITHIN GROUP (ORDER BY {})",
                   seconds_between="extract(epoch FROM {0} - {1})::DOUBLE PRECISION",
                   utc_day="({} AT TIME ZONE 'UTC')::DATE")
# A session's snapshot: every read inside it sees the same committed batches (and their mark).
_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


class PostgreSQLReader(ArchiveReader):
    """Reads the archive in the database `url` names; `timeout` bounds a wait behind a migration."""

    _dialect = _DIALECT

    def __init__(self, url: str, timeout: timedelta) -> None:
        from archiver.storage import redact

        self.url = url
        self.name = redact(url)
        self.timeout = timeout
        self._conn: Conn | None = None  # inside a session: its connection, in its transaction
        self._limit: float = 0.0  # inside a session: its time limit in seconds (0: none)

    def __repr__(self) -> str:
        return f"PostgreSQLReader({self.name!r})"

    def _read(self, read: Callable[[Conn], T], snapshot: bool = False) -> T:
        """`read` on the session's connection, or on a pooled one (in one snapshot if `snapshot`)."""
        try:
            if self._conn is not None:
                return read(self._conn)
            if not snapshot:
                return pool.with_connection(self.url, self.timeout, read)

            def in_snapshot(conn: Conn) -> T:
                conn.execute(_SNAPSHOT)
                try:
                    return read(conn)
                finally:
                    conn.execute("COMMIT")  # read only: nothing to commit but the snapshot to let go

            return pool.with_connection(self.url, self.timeout, in_snapshot)
        except pg_errors.QueryCanceled:
            raise QueryTimeout(f"reading archive {self.name} took longer than {self._limit:g}s and was stopped") from None
        except pg_errors.LockNotAvailable:
            raise ArchiveBusy(f"archive {self.name} is being upgraded (a migration holds its tables); "
                              f"try again in a moment (readers wait up to archive.read_timeout)") from None
        except psycopg.Error as exc:
            from archiver.storage.postgresql.connect import classify

            raise classify(self.url, exc) from None

    @contextmanager
    def session(self, time_limit: timedelta | None = None) -> Iterator[PostgreSQLReader]:
        if self._conn is not None:  # already a session: share its connection (and its time limit)
            yield self
            return
        session = PostgreSQLReader(self.url, self.timeout)
        seconds = time_limit.total_seconds() if time_limit is not None else 0.0
        session._limit = seconds
        conn = pool.begin(self.url, self.timeout, _SNAPSHOT)
        done, fired, cancelling = threading.Event(), threading.Event(), threading.Lock()
        try:
            if seconds > 0:
                # The server stops any one statement at the limit; the timer stops whichever runs
                # when the block as a whole reaches it (as DuckDB's session does).
                conn.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")
                threading.Thread(target=_cancel_after, args=(conn, seconds, done, fired, cancelling), daemon=True).start()
            session._conn = conn
            yield session
        except pg_errors.QueryCanceled:
            raise QueryTimeout(f"reading archive {self.name} took longer than {seconds:g}s and was stopped") from None
        except psycopg.Error as exc:
            from archiver.storage.postgresql.connect import classify

            raise classify(self.url, exc) from None
        finally:
            with cancelling:  # once set, no cancel is sent any more (one in flight has been delivered)
                done.set()
            session._conn = None
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
            if fired.is_set():  # a cancel still on its way must not stop the next caller's statement
                conn.close()
            pool.give_back(self.url, self.timeout, conn)

    # -- events ------------------------------------------------------------------------------------

    def event(self, event_id: uuid.UUID) -> dict[str, Any] | None:
        row = self._read(lambda c: c.execute(f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = %s",
                                             [event_id]).fetchone())
        return event_to_api(*row) if row else None

    def page(self, search: EventFilter, limit: int, after: Position | None = None, total: int | None = None) -> Page:
        return self._read(lambda c: read_page(c, search, limit, after=after, total=total), snapshot=total is None)

    def count(self, search: EventFilter) -> int:
        return self._read(lambda c: count_events(c, search))

    def facets(self, search: EventFilter, limit: int = 10) -> Facets:
        return self._named(self._read(lambda c: read_facets(c, search, limit), snapshot=True))

    def _browse_rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        # The shared SQL has no other `?` nor `%` (storage/browse.py): psycopg's marks are %s.
        return self._read(lambda c: c.execute(sql.replace("?", "%s"), params).fetchall())

    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        rows = self._read(lambda c: c.execute(queries.BUCKET_COUNTS, queries.bucket_params(since, until, width)).fetchall())
        return queries.bucket_starts(rows, width)

    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        value = self._read(lambda c: _scalar(c, queries.NEWEST_BEFORE, [moment]))
        return to_utc(value) if value is not None else None

    # -- the archive's state ---------------------------------------------------------------------------

    def high_water_mark(self) -> datetime | None:
        return self._read(_mark)

    def gaps(self) -> list[tuple[datetime, datetime]]:
        rows = self._read(lambda c: c.execute(queries.GAPS).fetchall())
        return [(to_utc(since), to_utc(until)) for since, until in rows]

    def status(self, now: datetime | None = None) -> ArchiveStatus:
        now = now or datetime.now(timezone.utc)

        def read(conn: Conn) -> tuple[Any, ...]:
            events = _scalar(conn, "SELECT count(*) FROM events")
            last = conn.execute(
                "SELECT id, started, finished, outcome, error, inserted, fetched FROM syncs "
                "WHERE kind = 'sync' ORDER BY started DESC LIMIT 1"
            ).fetchone()
            last_ok = _scalar(conn, "SELECT max(finished) FROM syncs WHERE kind = 'sync' AND outcome = 'ok'")
            quarantine = conn.execute(
                "SELECT count(*) FILTER (WHERE resolved IS NULL), count(*) FILTER (WHERE resolved IS NOT NULL) "
                "FROM quarantine"
            ).fetchone() or (0, 0)
            return events, _mark(conn), last, last_ok, conn.execute(queries.GAPS).fetchall(), quarantine

        events, mark, last, last_ok, gaps, (quarantined, resolved) = self._read(read, snapshot=True)
        return ArchiveStatus(
            archive=self.name,
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
        if outcome == "running":
            from archiver.storage.postgresql import open_archive

            # Every writer holds the advisory lock while its run is 'running': with the lock free,
            # the process is gone (the next writer marks the row so in the ledger).
            if not open_archive(self.url).writer_alive():
                outcome, error = "interrupted", ORPHANED_RUN_ERROR
        return LastSync(uuid.UUID(str(run_id)), to_utc(started), to_utc(finished) if finished else None,
                        outcome, error, inserted, fetched)

    # -- runs ----------------------------------------------------------------------------------------

    def flow_run(self, flow_run_id: uuid.UUID) -> dict[str, Any] | None:
        value = self._read(lambda c: _scalar(c, "SELECT object::text FROM flow_runs WHERE id = %s", [flow_run_id]))
        return json.loads(value) if value else None

    def run_history(self, run_id: uuid.UUID) -> RunHistory:
        wanted = str(run_id)

        def read(conn: Conn) -> tuple[datetime | None, RunHistory | None]:
            mark = _mark(conn)
            for kind, table, prefix in _RUN_TABLES:
                rows = conn.execute(_STATES_SQL.format(kind=kind),
                                    {"run": run_id, "kind": kind, "resource": prefix + wanted}).fetchall()
                name = _scalar(conn, f"SELECT name FROM {table} WHERE id = %s", [run_id])
                if rows or name is not None:
                    return mark, RunHistory(kind, wanted, name, [run_state_from_row(row) for row in rows], mark)
            return mark, None

        mark, history = self._read(read, snapshot=True)
        if history is not None:
            return history
        ends = (f"which ends at its high-water mark {format_timestamp(mark)}: a run newer than that is archived by "
                "the next `prefect-archiver sync`") if mark else "which no sync has filled yet"
        raise RunNotFound(f"no flow run or task run with id {wanted} in the archive at {self.name}, {ends}")

    # -- run logs and artifacts ---------------------------------------------------------------------

    def _logs_query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        def read(conn: Conn) -> list[tuple[Any, ...]]:
            try:
                return conn.execute(sql, params).fetchall()
            except pg_errors.UndefinedTable:
                raise PredatesLogs(f"archive {self.name} predates run logs: run `prefect-archiver sync` once to "
                                   "upgrade it") from None
        return self._read(read)

    def logs(self, query: LogQuery, whole: bool = True) -> list[dict[str, Any]]:
        rows = self._logs_query(*log_queries.logs_select(query, log_queries.POSTGRESQL, "whole" if whole else "columns"))
        return log_queries.log_dicts(rows, whole)

    def log_lines(self, query: LogQuery) -> list[tuple[str, int, int, str | None]]:
        return self._logs_query(*log_queries.logs_select(query, log_queries.POSTGRESQL, "line"))

    def artifacts(self, query: ArtifactQuery) -> list[dict[str, Any]]:
        sql, params = log_queries.artifacts_select(query, log_queries.POSTGRESQL)
        return [json.loads(row[0]) for row in self._logs_query(sql, params)]

    def run_log_counts(self, run_id: uuid.UUID) -> RunLogCounts:
        try:
            rows = self._logs_query(log_queries.run_counts(log_queries.POSTGRESQL), [run_id] * 4)
        except PredatesLogs:  # an archive from before logs: none archived yet
            return RunLogCounts(0, 0)
        return RunLogCounts(int(rows[0][0]), int(rows[0][1])) if rows else RunLogCounts(0, 0)

    def harvested_runs(self, since: datetime, until: datetime) -> list[tuple[str, str]]:
        try:
            rows = self._logs_query(log_queries.harvested_runs(log_queries.POSTGRESQL), [since, until])
        except PredatesLogs:  # an archive from before logs: no run harvested yet
            return []
        return [(str(kind), str(run)) for kind, run in rows]

    def run_log_ids(self, run_id: uuid.UUID, level_ge: int | None = None) -> tuple[set[str], set[str]]:
        d = log_queries.POSTGRESQL
        logs = self._logs_query(log_queries.run_log_ids(d), [run_id, run_id, level_ge or 0])
        artifacts = self._logs_query(log_queries.run_artifact_ids(d), [run_id] * 2)
        return {str(r[0]) for r in logs}, {str(r[0]) for r in artifacts}

    # -- the SQL console -------------------------------------------------------------------------------

    def sql(self, query: str) -> AbstractContextManager[SqlResult]:
        return run_sql(self.url, query, self.timeout)


def _scalar(conn: Conn, sql: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def _mark(conn: Conn) -> datetime | None:
    mark = _scalar(conn, queries.MARK)
    return to_utc(mark) if mark else None


def _cancel_after(conn: Conn, seconds: float, done: threading.Event, fired: threading.Event,
                  cancelling: threading.Lock) -> None:
    """Cancel `conn`'s statement once `seconds` have passed, and again until the session ends.

    A cancel reaches only a statement that is running: one landing between two reads is lost.
    `fired` tells the session to close the connection rather than pool it.
    """
    if done.wait(seconds):
        return
    while True:
        with cancelling:
            if done.is_set():
                return
            fired.set()
            try:
                conn.cancel_safe(timeout=1.0)
            except psycopg.Error:  # the connection is gone: nothing left to stop
                return
        done.wait(0.02)
