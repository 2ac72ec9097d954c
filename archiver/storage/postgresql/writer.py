"""The PostgreSQL writer: idempotent bulk writes, the high-water mark, the ledger, run metadata and states.

Every write is one transaction on a pooled connection; between them the writer holds nothing a
reader waits on (MVCC: readers never wait for a writer), so holding() is the default no-op. Rows
go in as one array per column unnested in one `INSERT … SELECT … ON CONFLICT DO NOTHING
RETURNING`, through psycopg's own binding (server-side parameters, arrays sent whole): never row
by row, and the counts come from what RETURNING says was new.

SQLAlchemy gives the engine from the URL and a real pool (QueuePool, see connect.create_engine),
and runs the statements any SQL database runs as they are (storage/statements.py: the mark,
gaps, the ledger) exactly as the DuckDB writer does.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from archiver.errors import ArchiveError
from archiver.prefect.events import Event, Malformed, compact_json, to_utc
from archiver.storage import log_progress, log_queries
from archiver.storage.batches import dedupe, event_days, resource_columns, resource_spans, uuid_text
from archiver.storage.logs import Artifact, Log, LogMark, LogRun
from archiver.storage.postgresql import logs, queries, runs
from archiver.storage.postgresql.connect import classify, create_engine
from archiver.storage.postgresql.migrate import migrate
from archiver.storage.statements import ADVANCE_MARK, FINISH_RUN, ORPHAN_RUNS, RECORD_GAP, START_RUN
from archiver.storage.writer import (
    LEDGER_COUNTERS,
    ORPHANED_RUN_ERROR,
    ArchiveWriter,
    Gap,
    PendingRun,
    RunState,
    StateFetch,
    StorageBlock,
    WriteCounts,
)

log = logging.getLogger("archiver.storage.postgresql.writer")

# Events arrive by COPY into a temporary table, then one INSERT … SELECT … ON CONFLICT moves the
# new ones in: measured on 2,000-event batches (~3.3 KB each) 0.17-0.19 s, against 0.6-1.1 s for
# the same rows as arrays through unnest() (bench/storage_write.py has the whole-batch figures).
# The table lives as long as its connection and empties itself at every commit.
_EVENT_COLUMNS = ("id", "occurred", "received", "event", "resource_id", "resource", "related", "payload", "follows",
                  "content_hash", "archived_at")
_INCOMING = "incoming_events"
_CREATE_INCOMING = f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} (LIKE events) ON COMMIT DELETE ROWS"
_COPY_INCOMING = f"COPY {_INCOMING} ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
_INSERT_EVENTS = f"""
INSERT INTO events ({', '.join(_EVENT_COLUMNS)})
SELECT {', '.join(_EVENT_COLUMNS)} FROM {_INCOMING}
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_COPY_RESOURCES = "COPY event_resources (event_id, occurred, resource_id, role) FROM STDIN"
# The new events' UTC days (migration 0005), in the transaction that inserts them.
_ADD_EVENT_DAYS = """
INSERT INTO event_days (day, events) SELECT * FROM unnest(%s::DATE[], %s::BIGINT[])
ON CONFLICT (day) DO UPDATE SET events = event_days.events + excluded.events
"""
# The resources' spans (migration 0006) widened to take in the new rows, in the same transaction.
_WIDEN_SPANS = """
INSERT INTO resource_spans (resource_id, first_occurred, last_occurred)
SELECT * FROM unnest(%s::TEXT[], %s::TIMESTAMPTZ[], %s::TIMESTAMPTZ[])
ON CONFLICT (resource_id) DO UPDATE SET
    first_occurred = least(resource_spans.first_occurred, excluded.first_occurred),
    last_occurred = greatest(resource_spans.last_occurred, excluded.last_occurred)
"""
_STORED_HASHES = "SELECT id, content_hash FROM events WHERE id = ANY(%s::UUID[])"
_INSERT_QUARANTINE = """
INSERT INTO quarantine (raw_hash, raw, reason, event_id, first_seen, sync_id)
SELECT * FROM unnest(%s::TEXT[], %s::TEXT[], %s::TEXT[], %s::TEXT[], %s::TIMESTAMPTZ[], %s::UUID[])
ON CONFLICT (raw_hash) DO NOTHING
RETURNING raw_hash
"""
# DuckDB's TRY_CAST(event_id AS UUID): the spellings PostgreSQL's uuid input takes, matched first
# so the cast never fails the statement (CASE evaluates it only for a match).
_UUID_TEXT = r"^(\{[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}\}|[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12})$"
_RESOLVE_QUARANTINE = f"""
UPDATE quarantine SET resolved = %s
WHERE resolved IS NULL
  AND CASE WHEN event_id ~ '{_UUID_TEXT}' THEN event_id::UUID END IN (
      SELECT id FROM events WHERE id = ANY(%s::UUID[]))
RETURNING raw_hash
"""
# JSONB and TEXT cannot hold NUL (U+0000); DuckDB's JSON text can. json.dumps writes it \u0000
# (preceded by an even number of backslashes: an odd number is an escaped backslash, then text).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
NUL_REASON = "holds the NUL character (\\u0000), which PostgreSQL cannot store in text or JSON"


def _event_row(event: Event, now: datetime) -> tuple[Any, ...] | None:
    """The event as a row of events (_EVENT_COLUMNS), or None when PostgreSQL cannot store it as
    it is: NUL in its text (see NUL_REASON). Its JSON is serialized once, for both."""
    resource, related, payload = compact_json(event.resource), compact_json(event.related), compact_json(event.payload)
    for text in (event.event, event.resource_id, resource, related, payload):
        # The substring test first: the regex is slow on long texts, and almost no event needs it.
        if "\x00" in text or ("\\u0000" in text and _NUL_ESCAPE.search(text)):
            return None
    return (event.id, event.occurred, event.received, event.event, event.resource_id, resource, related, payload,
            event.follows, event.content_hash, now)


def _as_malformed(event: Event) -> Malformed:
    """An event PostgreSQL cannot store, for the quarantine: its JSON with NUL kept as the escape \\u0000."""
    raw = compact_json({"id": str(event.id), "occurred": event.occurred.isoformat(), "event": event.event,
                        "resource": event.resource, "related": event.related, "payload": event.payload},
                       sort_keys=True)
    return Malformed(raw=raw.replace("\x00", "\\u0000"), reason=NUL_REASON, event_id=str(event.id))


def _quarantine_text(text: str | None) -> str | None:
    """A quarantined item's text as TEXT holds it: a raw NUL written as its JSON escape."""
    return text.replace("\x00", "\\u0000") if text and "\x00" in text else text


# SQLSTATEs: class 08 (connection exception) and 57P (the server shutting down or restarting) mean
# the connection is gone; none at all is libpq's own failure. 55P03: lock_timeout ran out.
_CONNECTION_LOST = ("08", "57P")
_LOCK_NOT_AVAILABLE = "55P03"


class PostgreSQLWriter(ArchiveWriter):
    """The writer side of one PostgreSQL archive."""

    def __init__(self, url: str, busy_timeout: timedelta = timedelta(seconds=15)) -> None:
        """Connect (migrating the schema); `busy_timeout` bounds how long a statement waits for a
        lock another session holds (PostgreSQL's lock_timeout) instead of the server's forever."""
        from archiver.storage import redact

        self.url = url
        self.name = redact(url)
        self.engine = create_engine(url, lock_timeout=busy_timeout)
        try:
            migrate(self.engine)
        except sa.exc.DBAPIError as exc:
            self.engine.dispose()
            raise classify(url, exc) from None
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"PostgreSQLWriter({self.name!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction on a pooled connection; any database error rolls it back whole."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise classify(self.url, exc) from None
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if exc.connection_invalidated or (sqlstate or "08").startswith(_CONNECTION_LOST):
                self.engine.dispose()  # the server went away: every pooled connection with it
                raise classify(self.url, exc) from exc
            first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            waited = (" (another session held a lock on what it writes for longer than archive.read_timeout: a "
                      "long transaction or a migration elsewhere)") if sqlstate == _LOCK_NOT_AVAILABLE else ""
            raise ArchiveError(
                f"writing to archive {self.name} failed ({first}){waited}; the transaction was rolled back, so the "
                "archive and its high-water mark are as they were — the next sync continues from there"
            ) from exc
        finally:
            conn.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- events --------------------------------------------------------------------------------

    def write_batch(
        self,
        events: Sequence[Event],
        malformed: Sequence[Malformed] = (),
        mark: datetime | None = None,
        ledger_id: uuid.UUID | None = None,
    ) -> WriteCounts:
        """Insert events (first write wins), quarantine the malformed, advance the mark: atomically."""
        unique, repeats, conflicting = dedupe(events)
        now = datetime.now(timezone.utc)
        rows = {e.id: _event_row(e, now) for e in unique}
        unstorable = [e for e in unique if rows[e.id] is None]
        if unstorable:  # quarantined whole, instead of failing the batch on every sync
            unique = [e for e in unique if rows[e.id] is not None]
            malformed = [*malformed, *(_as_malformed(e) for e in unstorable)]
        quarantined = resolved = 0
        with self._transaction() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None  # a live connection inside its transaction
            # Ids already archived are looked up first (an index probe), so a re-read window does
            # not send its events again; ON CONFLICT still settles anything that raced in.
            stored: dict[uuid.UUID, str] = {}
            if unique:
                stored = {row[0]: row[1] for row in conn.exec_driver_sql(_STORED_HASHES, ([e.id for e in unique],))}
            fresh = [e for e in unique if e.id not in stored]
            inserted: set[uuid.UUID] = set()
            if fresh:
                conn.exec_driver_sql(_CREATE_INCOMING)
                with driver.cursor() as cursor, cursor.copy(_COPY_INCOMING) as copy:
                    for event in fresh:
                        copy.write_row(rows[event.id])
                inserted = {row[0] for row in conn.exec_driver_sql(_INSERT_EVENTS)}
                raced = [e.id for e in fresh if e.id not in inserted]
                if raced:
                    stored.update((row[0], row[1]) for row in conn.exec_driver_sql(_STORED_HASHES, (raced,)))
            known = [e for e in unique if e.id not in inserted]
            conflicting += [e for e in known if stored.get(e.id) != e.content_hash]
            new = [e for e in unique if e.id in inserted]
            if new:
                resources = resource_columns(new)
                with driver.cursor() as cursor, cursor.copy(_COPY_RESOURCES) as copy:
                    for row in zip(*resources, strict=True):
                        copy.write_row(row)
                conn.exec_driver_sql(_WIDEN_SPANS, resource_spans(resources[1], resources[2]))
                conn.exec_driver_sql(_ADD_EVENT_DAYS, event_days(new))
                # Runs, flows and deployments recur in most of a batch's events: each once.
                conn.exec_driver_sql(runs.QUEUE_OBJECTS, (now, list(dict.fromkeys(resources[2]))))
            if malformed:
                quarantine_rows = conn.exec_driver_sql(
                    _INSERT_QUARANTINE,
                    (
                        [m.raw_hash for m in malformed],
                        [_quarantine_text(m.raw) for m in malformed],
                        [_quarantine_text(m.reason) for m in malformed],
                        [_quarantine_text(m.event_id) for m in malformed],
                        [now] * len(malformed),
                        [ledger_id] * len(malformed),
                    ),
                ).fetchall()
                quarantined = len(quarantine_rows)
            resolvable = [e.id for e in unique] + [
                uuid.UUID(i) for i in (uuid_text(m.event_id) for m in malformed) if i]
            if resolvable:
                resolved = len(conn.exec_driver_sql(_RESOLVE_QUARANTINE, (now, resolvable)).fetchall())
            if mark is not None:
                conn.execute(ADVANCE_MARK, {"mark": mark})
        for event in conflicting:
            log.warning("event %s arrived again with different content; the first archived version is kept", event.id)
        return WriteCounts(inserted=len(new), duplicates=repeats + len(known) + len(malformed) - quarantined,
                           conflicts=len(conflicting), quarantined=quarantined, resolved=resolved)

    def advance_mark(self, mark: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(ADVANCE_MARK, {"mark": mark})

    def high_water_mark(self) -> datetime | None:
        with self._transaction() as conn:
            value = conn.exec_driver_sql(queries.MARK).scalar()
        return to_utc(value) if value is not None else None

    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        with self._transaction() as conn:
            rows = conn.exec_driver_sql(queries.BUCKET_COUNTS, tuple(queries.bucket_params(since, until, width))).fetchall()
        return queries.bucket_starts([(int(bucket), int(count)) for bucket, count in rows], width)

    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        with self._transaction() as conn:
            value = conn.exec_driver_sql(queries.NEWEST_BEFORE, (moment,)).scalar()
        return to_utc(value) if value is not None else None

    # -- gaps ----------------------------------------------------------------------------------

    def gaps(self) -> list[Gap]:
        with self._transaction() as conn:
            rows = conn.exec_driver_sql(queries.GAPS).fetchall()
        return [(to_utc(since), to_utc(until)) for since, until in rows]

    def record_gap(self, since: datetime, until: datetime, ledger_id: uuid.UUID) -> None:
        with self._transaction() as conn:
            conn.execute(RECORD_GAP, {"since": since, "until": until, "detected_at": datetime.now(timezone.utc),
                                      "ledger_id": ledger_id})

    # -- run metadata and states (the SQL is in runs.py) ----------------------------------------

    def queued_objects(self, kind: str, after: str | None, limit: int) -> list[str]:
        with self._transaction() as conn:
            return runs.queued_objects(conn, kind, after, limit)

    def save_objects(self, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]], give_up_after: int) -> int:
        with self._transaction() as conn:
            return runs.save_objects(conn, kind, asked, objects, give_up_after)

    def states_cursor(self) -> datetime | None:
        with self._transaction() as conn:
            return runs.states_cursor(conn)

    def pending_runs(self, run_kind: str, since: datetime, limit: int) -> list[PendingRun]:
        with self._transaction() as conn:
            return runs.pending_runs(conn, run_kind, since, limit)

    def save_states(self, states: Sequence[RunState], fetches: Sequence[StateFetch]) -> None:
        with self._transaction() as conn:
            runs.save_states(conn, states, fetches)

    def advance_states_cursor(self, planned_at: datetime) -> None:
        with self._transaction() as conn:
            runs.advance_states_cursor(conn, planned_at)

    def unread_storage_blocks(self) -> list[str]:
        with self._transaction() as conn:
            return runs.unread_storage_blocks(conn)

    def save_storage_blocks(self, blocks: Sequence[StorageBlock]) -> None:
        if blocks:
            with self._transaction() as conn:
                runs.save_storage_blocks(conn, blocks)

    # -- run logs and artifacts (SQL in logs.py; the plan, shared by backends, in log_progress.py) ---

    def logs_cursor(self) -> datetime | None:
        with self._transaction() as conn:
            return log_progress.logs_cursor(conn)

    def pending_log_runs(self, since: datetime, limit: int, after: tuple[str, str] | None = None) -> list[LogRun]:
        with self._transaction() as conn:
            return log_progress.pending_log_runs(conn, log_queries.POSTGRESQL, since, limit, after)

    def save_logs(self, page: Sequence[Log], mark: LogMark) -> WriteCounts:
        with self._transaction() as conn:
            return logs.save_logs(conn, page, mark)

    def save_artifacts(self, artifacts: Sequence[Artifact], mark: LogMark) -> WriteCounts:
        with self._transaction() as conn:
            return logs.save_artifacts(conn, artifacts, mark)

    def advance_logs_cursor(self, planned_at: datetime) -> None:
        with self._transaction() as conn:
            log_progress.advance_logs_cursor(conn, planned_at)

    # -- ledger --------------------------------------------------------------------------------

    def start_run(self, kind: str, since: datetime | None, until: datetime | None) -> uuid.UUID:
        """A new 'running' row in the ledger; rows still 'running' become 'interrupted' (every writer
        holds the writer lock from before this call to after finish_run: such a row's process died)."""
        ledger_id = uuid.uuid4()
        with self._transaction() as conn:
            conn.execute(ORPHAN_RUNS, {"error": ORPHANED_RUN_ERROR})
            conn.execute(START_RUN, {"id": ledger_id, "kind": kind, "started": datetime.now(timezone.utc),
                                     "since": since, "until": until})
        return ledger_id

    def finish_run(self, ledger_id: uuid.UUID, counters: dict[str, int], outcome: str, error: str | None = None) -> None:
        values = {name: int(counters.get(name, 0)) for name in LEDGER_COUNTERS}
        with self._transaction() as conn:
            conn.execute(FINISH_RUN, {"id": ledger_id, "finished": datetime.now(timezone.utc),
                                      "outcome": outcome, "error": error, **values})
