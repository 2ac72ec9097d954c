"""The DuckDB writer: idempotent bulk writes, the high-water mark, the ledger, run metadata and states.

The writer opens the file for one transaction and lets go (see connect.py), so `get` and
`status` in other processes answer while a sync runs; a sync's transactions that follow each
other share one open for up to HOLD_SECONDS, let go when idle (DuckDBWriter.holding). Rows go in
through DuckDB's own bulk path (lists unnested in one INSERT … SELECT), never row by row. Events
have no primary key (migration 0010): a batch's ids already archived are looked up first, within
the batch's id range, and only the rest are inserted, so every write is idempotent and `inserted`
counts exactly what was new.

SQLAlchemy earns its place here: the engine comes from the archive's URL (duckdb:///… through
duckdb-engine, as a PostgreSQL writer's will from postgresql+psycopg://…), its pool is chosen on
purpose (NullPool, see __init__), and the statements any SQL database runs as they are (the
ledger, gaps, the mark) go through sa.text with named parameters. The hot path stays DuckDB's
own: unnest() lists in one statement, measured 8,900-11,500 rows/s against SQLAlchemy's
executemany at 2,800-4,400 and its on_conflict_do_nothing at ~450 (shared/stack-notes.md).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import duckdb
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from archiver.errors import ArchiveError
from archiver.prefect.events import Event, Malformed, compact_json, to_utc
from archiver.storage import log_progress, log_queries
from archiver.storage.batches import dedupe, event_days, resource_rows, resource_spans, uuid_text
from archiver.storage.duckdb import logs, queries, runs
from archiver.storage.duckdb.connect import (
    MAX_RETRY_DELAY,
    NO_EXTENSIONS,
    classify,
    quiet,
    reader_waiting,
    require_duckdb_file,
    with_lock_retry,
)
from archiver.storage.duckdb.migrate import migrate
from archiver.storage.logs import Artifact, Log, LogMark, LogRun
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

log = logging.getLogger("archiver.storage.duckdb.writer")
# The longest a hold keeps the file across consecutive transactions (DuckDBWriter.holding), and
# WAITED_HOLD_SECONDS while a reader waits (connect.reader_waiting). Every release costs a checkpoint
# on close and a fresh open: measured 15 ms + 25-180 ms per 2,000-event batch while events had a
# primary key, whose index each open loaded again (migration 0010 dropped it), and still tens of
# ms a batch after it, growing with the events in the last row group. When a hold ends the writer
# stays away for longer than a waiting reader's retry interval (connect.MAX_RETRY_DELAY), so a reader gets in
# within about WAITED_HOLD_SECONDS plus one batch: without that pause the file was free for
# microseconds and readers polling it never got in. A reader that cannot say it waits (the duckdb
# CLI, another tool) gets in within about HOLD_SECONDS.
HOLD_SECONDS = 2.0
WAITED_HOLD_SECONDS = 0.5
READER_TURN_SECONDS = 2 * MAX_RETRY_DELAY
# How long a hold keeps the file with no transaction on it before the writer lets go by itself
# (DuckDBWriter._release_when_idle), and WAITED_IDLE_SECONDS while a reader waits: the caller may be
# waiting for the server, for a page or a retry, and readers must not wait long for that. Longer
# than the few milliseconds between a sync's back-to-back transactions (the ~15 after a 12k-event
# backfill, the ledger and the passes with nothing to do, took 0.55 s opened one by one and 0.08 s
# sharing one), and, with no reader waiting, than the ~0.5 s a backfill's writer waits between
# batches of 2,000: let go after 0.05 s idle, every batch was released and opened again, and a
# 100k-event first sync took 22.7 CPU s (peak RSS 256 MB) where it takes 19.0 (240 MB) held
# (bench/ingest.py, median of 2).
IDLE_RELEASE_SECONDS = 1.0
WAITED_IDLE_SECONDS = 0.05
WRITER_CONFIG = dict(NO_EXTENSIONS)
# The writer's DuckDB memory_limit. DuckDB keeps the blocks it reads and writes cached up to its
# limit (80% of RAM by default), so without one a backfill's RSS grew with the archive: a checkpoint
# that completes a row group of events pinned it whole (+112 MB at 246k events). Writing 1M events
# peaked at 543 MB without a limit and at 337 MB under this one (bench/writer_memory.py); a first
# sync of 100k events at 308 MB, now 239 (bench/ingest.py). What DuckDB cannot evict must fit as
# well: the parts of the indexes a commit adds to, which grow with the archive (event_resources'
# on resource_id, until migration 0011: 5M events, 15M rows, failed at commit under 366 MB and not
# under 450; resource_spans' key in its place, 64 B a resource: 1M events, 333k resources, were
# written without a raise and peaked at 261 MB, against 327 MB with that index and 32 B a row). So the
# limit is WRITER_MEMORY_MB plus INDEX_BYTES_PER_ROW for each row of the indexed tables, counted at
# the first open and every RESIZE_SECONDS after. A commit that still runs out fails whole (DuckDB
# rolls it back and invalidates the database): the limit then doubles and the transaction is done
# again, up to DuckDB's own default (WRITER_MEMORY_CEILING_MB). Migrations run without a limit.
WRITER_MEMORY_MB = 96
# How often the indexed rows are counted again: a backfill reopens the file every HOLD_SECONDS, and
# the count was 2% of a 100k first sync's CPU samples when taken at every open. A minute's backfill
# (~300k events at most here, ~100k resources) adds ~6 MB of index, well inside WRITER_MEMORY_MB.
RESIZE_SECONDS = 60.0
INDEX_BYTES_PER_ROW = {"resource_spans": 64, "logs": 96, "artifacts": 64}  # 1, 3 and 2 indexes a row
WRITER_MEMORY_CEILING_MB = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8 / 2**20)
_INDEXED_ROWS = "SELECT table_name, estimated_size FROM duckdb_tables() WHERE table_name IN (SELECT unnest($1::VARCHAR[]))"
# How DuckDB says it: OutOfMemoryException ("could not allocate block"), or at commit a
# TransactionException ("Failed to commit: failed to pin block of size 256.0 KiB").
_OUT_OF_MEMORY = re.compile(r"could not allocate block|failed to pin block|out of memory", re.IGNORECASE)

# The batch's ids already archived, with their content hashes (a repeat with other content is a
# conflict). Bounded by the batch's lowest and highest id ($2, $3): Prefect's ids are UUIDv7, about
# in insertion order, so the zone maps skip every row group outside the batch's range and the scan
# reads a row group or two however big the archive (UUIDv4 ids from older clients scan more).
_ARCHIVED_IDS = """
SELECT id::VARCHAR, content_hash FROM events
WHERE id BETWEEN $2::UUID AND $3::UUID AND id IN (SELECT unnest($1::UUID[]))
"""
# archived_at ($11) is the same for every event of a batch; bound once instead of once an event, it
# measured no gain over 4 rounds of the real writer, so it stays a column like the others.
_INSERT_EVENTS = """
INSERT INTO events
SELECT * FROM (SELECT
    unnest($1::UUID[]), unnest($2::TIMESTAMPTZ[]), unnest($3::TIMESTAMPTZ[]), unnest($4::VARCHAR[]),
    unnest($5::VARCHAR[]), unnest($6::JSON[]), unnest($7::JSON[]), unnest($8::JSON[]),
    unnest($9::UUID[]), unnest($10::VARCHAR[]), unnest($11::TIMESTAMPTZ[]))
"""
# A row per resource names its event by its position ($3, batches.resource_rows) in the batch's ids
# and occurred times ($1, $2), so those are bound once an event rather than once a row (~3 rows an
# event): a 2,000-event batch took 262-292 ms where it took 294-315 (bench/storage_write.py
# --batches 30 --backends duckdb, 3 rounds each, interleaved).
_INSERT_RESOURCES = """
INSERT INTO event_resources
SELECT ($1::UUID[])[position + 1], ($2::TIMESTAMPTZ[])[position + 1], resource_id, role
FROM (SELECT unnest($3::INTEGER[]) AS position, unnest($4::VARCHAR[]) AS resource_id, unnest($5::VARCHAR[]) AS role)
"""
# The new events' UTC days (migration 0009): in the transaction that inserts them, so the counts
# never disagree with the events, whatever is killed when.
_ADD_EVENT_DAYS = """
INSERT INTO event_days SELECT * FROM (SELECT unnest($1::DATE[]), unnest($2::BIGINT[]))
ON CONFLICT (day) DO UPDATE SET events = event_days.events + excluded.events
"""
_INSERT_QUARANTINE = """
INSERT OR IGNORE INTO quarantine (raw_hash, raw, reason, event_id, first_seen, sync_id)
SELECT * FROM (SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::VARCHAR[]),
    unnest($4::VARCHAR[]), unnest($5::TIMESTAMPTZ[]), unnest($6::UUID[]))
RETURNING raw_hash
"""
# Quarantined items whose event id is now archived (the server sent the real event later, or had
# sent it before): resolved (migration 0006). Ids in quarantine are the raw text the server sent.
_RESOLVE_QUARANTINE = """
UPDATE quarantine SET resolved = $2
WHERE resolved IS NULL AND TRY_CAST(event_id AS UUID) IN (
    SELECT id FROM events WHERE id BETWEEN $3::UUID AND $4::UUID AND id IN (SELECT unnest($1::UUID[])))
RETURNING raw_hash
"""

_ANY_UNRESOLVED = "SELECT 1 FROM quarantine WHERE resolved IS NULL LIMIT 1"


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _MemoryRaised(ArchiveError):
    """A transaction ran out of DuckDB memory and was rolled back; the limit is raised: do it again."""


def _given_memory(method: Callable[Concatenate[DuckDBWriter, _P], _T]) -> Callable[Concatenate[DuckDBWriter, _P], _T]:
    """Run a writer method again while its transaction fails for want of memory (WRITER_MEMORY_MB).

    Safe because each method's work is one transaction, rolled back whole when it fails; it ends
    because every failure doubles the limit, and at the ceiling the error is raised as it is.
    """

    @functools.wraps(method)
    def again(self: DuckDBWriter, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        while True:
            try:
                return method(self, *args, **kwargs)
            except _MemoryRaised:
                continue

    return again


class DuckDBWriter(ArchiveWriter):
    """The writer side of one archive file."""

    def __init__(self, path: Path, busy_timeout: timedelta = timedelta(seconds=15)) -> None:
        """Open (creating and migrating) the archive at `path`; `busy_timeout` is how long every
        open waits for another process that has the file open (a reader, mid-query)."""
        from archiver.storage.duckdb import DuckDBArchive

        self.path = path
        self.busy_timeout = busy_timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create the archive's folder {path.parent}: {exc.strerror}") from None
        require_duckdb_file(path)  # never write into someone's SQLite file (or anything else)
        # NullPool: a pooled connection would keep DuckDB's file lock after a batch is committed,
        # and no other process could open the file; holding() keeps one on purpose, briefly.
        self.engine = sa.create_engine(DuckDBArchive(path).url, poolclass=NullPool,
                                       connect_args={"config": dict(WRITER_CONFIG)})
        sa.event.listen(self.engine, "connect", self._configure)
        # DuckDB's memory_limit in MB (None: DuckDB's default), sized at each open once migrated (see
        # WRITER_MEMORY_MB); raised past that size when DuckDB ran out (_raise_memory_limit).
        self.memory_limit_mb: int | None = None
        # The size, and when the archive's indexed rows were last counted (monotonic).
        self._sized = WRITER_MEMORY_MB
        self._sized_at: float | None = None
        self._raised_to = 0  # past WRITER_MEMORY_CEILING_MB: DuckDB's default from then on
        self._migrated = False
        # The connection kept between transactions while holding() (None: the file is let go).
        self._held: sa.Connection | None = None
        self._held_since = 0.0
        self._used_at = 0.0  # when a transaction last ended on it (monotonic)
        self._holds = 0  # holding() blocks open (they nest)
        self._lock = threading.RLock()  # transactions come from the writer and the main thread
        self._idle = threading.Condition(self._lock)  # wakes the releaser: a connection was kept, or a hold ended
        self._releaser: threading.Thread | None = None
        with_lock_retry(path, busy_timeout, lambda: migrate(self.engine))
        self._migrated = True

    def _configure(self, dbapi_connection: Any, _record: Any) -> None:
        """Every open of the file: no progress bar, and (once migrated) a memory limit for the archive as it is now."""
        quiet(dbapi_connection)
        if not self._migrated or self._raised_to >= WRITER_MEMORY_CEILING_MB:
            return
        if self._sized_at is None or time.monotonic() - self._sized_at > RESIZE_SECONDS:
            indexed = dbapi_connection.execute(_INDEXED_ROWS, [list(INDEX_BYTES_PER_ROW)]).fetchall()
            self._sized = WRITER_MEMORY_MB + sum(INDEX_BYTES_PER_ROW[table] * rows for table, rows in indexed) // 2**20
            self._sized_at = time.monotonic()
        self.memory_limit_mb = self._limit_mb()
        if self.memory_limit_mb is not None:
            dbapi_connection.execute(f"SET memory_limit = '{self.memory_limit_mb}MB'")

    def _limit_mb(self) -> int | None:
        """The limit the archive's size and any raise call for; None past the ceiling (DuckDB's default)."""
        wanted = max(self._sized, self._raised_to)
        return wanted if wanted < WRITER_MEMORY_CEILING_MB else None

    def _raise_memory_limit(self, exc: BaseException) -> bool:
        """After DuckDB ran out of memory: double the limit for the next open; False if none is left to raise."""
        if self.memory_limit_mb is None or not _OUT_OF_MEMORY.search(str(exc)):
            return False
        self._raised_to = self.memory_limit_mb * 2
        self.memory_limit_mb = self._limit_mb()
        log.info("archive %s: DuckDB needed more than %s MB; the writer's memory_limit is now %s", self.path,
                 self._raised_to // 2, f"{self.memory_limit_mb} MB" if self.memory_limit_mb else
                 "DuckDB's default (80% of RAM)")
        return True

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction on a connection opened for it; the file is released afterwards
        (inside holding(), kept for the next transaction while the hold is young)."""
        with self._lock:
            conn, self._held, keep = self._held, None, False
            if conn is None:
                conn = with_lock_retry(self.path, self.busy_timeout, self.engine.connect)
                self._held_since = time.monotonic()
            try:
                with conn.begin():
                    yield conn
                # The marker is looked at only inside a hold: outside one the file is let go anyway.
                keep = self._holds > 0 and time.monotonic() - self._held_since < (
                    WAITED_HOLD_SECONDS if reader_waiting(self.path) else HOLD_SECONDS)
            except (sa.exc.DBAPIError, duckdb.Error) as exc:  # duckdb's own: write_batch's driver statements
                orig = getattr(exc, "orig", None) or exc
                if _OUT_OF_MEMORY.search(str(orig)):
                    # DuckDB invalidates the database when a commit fails: closed as it is, not rolled
                    # back (a rollback would only fail, loudly, with "database has been invalidated").
                    conn.invalidate()
                self.engine.dispose()
                if self._raise_memory_limit(orig):
                    raise _MemoryRaised(f"a transaction on archive {self.path} needed more memory") from exc
                error = classify(self.path, orig) or ArchiveError(
                    f"writing to archive {self.path} failed ({str(orig).splitlines()[0]}); the "
                    "transaction was rolled back, so the archive and its high-water mark are as they "
                    "were — the next sync continues from there"
                )
                raise error from exc
            finally:
                if keep:
                    self._held, self._used_at = conn, time.monotonic()
                    self._idle.notify()
                else:
                    conn.close()
                    if self._holds:
                        time.sleep(READER_TURN_SECONDS)  # a waiting reader's turn (HOLD_SECONDS)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Let consecutive transactions share one connection: let go after HOLD_SECONDS, or as
        soon as none has come for IDLE_RELEASE_SECONDS.

        For a sync, whose transactions follow each other in runs (a backfill's batches, the
        passes after it): it saves the checkpoint and the reopen between them. The caller need
        not release() before waiting for the network: an idle hold lets go by itself. Holds nest.
        """
        with self._lock:
            self._holds += 1
            if self._releaser is None:
                self._releaser = threading.Thread(target=self._release_when_idle, name="archive-release", daemon=True)
                self._releaser.start()
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                if not self._holds:
                    self.release()
                    self._idle.notify()  # the releaser sees no hold and ends

    def _release_when_idle(self) -> None:
        """The releaser thread, while any hold is open: close the kept connection once it is idle."""
        with self._idle:
            while self._holds:
                if self._held is None:
                    self._idle.wait()
                    continue
                idle_for = time.monotonic() - self._used_at
                longest = WAITED_IDLE_SECONDS if reader_waiting(self.path) else IDLE_RELEASE_SECONDS
                if idle_for >= longest:
                    self.release()
                else:  # woken often enough to see a reader start waiting
                    self._idle.wait(min(longest - idle_for, WAITED_IDLE_SECONDS))
            self._releaser = None

    def release(self) -> None:
        """Let go of the file if a hold kept it (readers and other writers can open it)."""
        with self._lock:
            conn, self._held = self._held, None
            if conn is not None:
                conn.close()

    def close(self) -> None:
        self.release()
        self.engine.dispose()

    # -- events --------------------------------------------------------------------------------

    @_given_memory
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
        quarantined = resolved = 0
        with self._transaction() as conn:
            # The statements that carry a whole batch go to DuckDB's own connection (the same one, in
            # the same transaction): its fetchall() hands rows back in one list, where SQLAlchemy
            # builds a Row per event; ids come back as text, compared without a UUID each.
            driver: Any = conn.connection.driver_connection
            ids = [str(e.id) for e in unique]
            # Check, then insert: safe because one writer holds the file (DuckDB's lock: no other
            # process opens it while this transaction is open) and this one's transactions take
            # self._lock, so no id can be archived between the look-up and the insert.
            stored: dict[str, str] = {}
            if unique:
                stored = dict(driver.execute(_ARCHIVED_IDS, (ids, min(ids), max(ids))).fetchall())
            known = [(event, text) for event, text in zip(unique, ids, strict=True) if text in stored]
            conflicting += [event for event, text in known if stored[text] != event.content_hash]
            fresh = [(event, text) for event, text in zip(unique, ids, strict=True) if text not in stored]
            new = [event for event, _ in fresh]
            if new:
                columns = _event_columns(new, [text for _, text in fresh], now)
                driver.execute(_INSERT_EVENTS, columns)
                event_ids, occurred = columns[0], columns[1]
                positions, resource_ids, roles = resource_rows(new)
                driver.execute(_INSERT_RESOURCES, (event_ids, occurred, positions, resource_ids, roles))
                driver.execute(queries.WIDEN_SPANS, resource_spans([occurred[p] for p in positions], resource_ids))
                driver.execute(_ADD_EVENT_DAYS, event_days(new))
                # Runs, flows and deployments recur in most of a batch's events: each once.
                driver.execute(runs.QUEUE_OBJECTS, (list(dict.fromkeys(resource_ids)), now))
            if malformed:
                rows = conn.exec_driver_sql(
                    _INSERT_QUARANTINE,
                    (
                        [m.raw_hash for m in malformed],
                        [m.raw for m in malformed],
                        [m.reason for m in malformed],
                        [m.event_id for m in malformed],
                        [now] * len(malformed),
                        [str(ledger_id) if ledger_id else None] * len(malformed),
                    ),
                ).fetchall()
                quarantined = len(rows)
            resolvable = ids + [i for i in (uuid_text(m.event_id) for m in malformed) if i]
            # Asked first: the UPDATE looks every id of the batch up in events even when nothing
            # waits to be resolved (usual), 83 ms a batch on a 1M-event archive against 1 ms for this.
            if resolvable and driver.execute(_ANY_UNRESOLVED).fetchone():
                resolved = len(driver.execute(_RESOLVE_QUARANTINE,
                                              (resolvable, now, min(resolvable), max(resolvable))).fetchall())
            if mark is not None:
                conn.execute(ADVANCE_MARK, {"mark": mark})
        for event in conflicting:
            log.warning("event %s arrived again with different content; the first archived version is kept", event.id)
        # A malformed item quarantined before is a repeat too: fetched = inserted + duplicates + quarantined.
        return WriteCounts(inserted=len(new), duplicates=repeats + len(known) + len(malformed) - quarantined,
                           conflicts=len(conflicting), quarantined=quarantined, resolved=resolved)

    @_given_memory
    def advance_mark(self, mark: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(ADVANCE_MARK, {"mark": mark})

    @_given_memory
    def high_water_mark(self) -> datetime | None:
        with self._transaction() as conn:
            value = conn.exec_driver_sql(queries.MARK).scalar()
        return to_utc(value) if value is not None else None

    @_given_memory
    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]:
        with self._transaction() as conn:
            rows = conn.exec_driver_sql(queries.BUCKET_COUNTS, tuple(queries.bucket_params(since, until, width))).fetchall()
        return queries.bucket_starts(rows, width)

    @_given_memory
    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        with self._transaction() as conn:
            value = conn.exec_driver_sql(queries.NEWEST_BEFORE, (moment,)).scalar()
        return to_utc(value) if value is not None else None

    # -- gaps ----------------------------------------------------------------------------------

    @_given_memory
    def gaps(self) -> list[Gap]:
        with self._transaction() as conn:
            rows = conn.exec_driver_sql(queries.GAPS).fetchall()
        return [(to_utc(since), to_utc(until)) for since, until in rows]

    @_given_memory
    def record_gap(self, since: datetime, until: datetime, ledger_id: uuid.UUID) -> None:
        with self._transaction() as conn:
            conn.execute(RECORD_GAP, {"since": since, "until": until, "detected_at": datetime.now(timezone.utc),
                                       "ledger_id": str(ledger_id)})

    # -- run metadata and states (the SQL is in runs.py) ----------------------------------------

    @_given_memory
    def queued_objects(self, kind: str, after: str | None, limit: int) -> list[str]:
        with self._transaction() as conn:
            return runs.queued_objects(conn, kind, after, limit)

    @_given_memory
    def save_objects(self, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]], give_up_after: int) -> int:
        with self._transaction() as conn:
            return runs.save_objects(conn, kind, asked, objects, give_up_after)

    @_given_memory
    def states_cursor(self) -> datetime | None:
        with self._transaction() as conn:
            return runs.states_cursor(conn)

    @_given_memory
    def pending_runs(self, run_kind: str, since: datetime, limit: int) -> list[PendingRun]:
        with self._transaction() as conn:
            return runs.pending_runs(conn, run_kind, since, limit)

    @_given_memory
    def save_states(self, states: Sequence[RunState], fetches: Sequence[StateFetch]) -> None:
        with self._transaction() as conn:
            runs.save_states(conn, states, fetches)

    @_given_memory
    def advance_states_cursor(self, planned_at: datetime) -> None:
        with self._transaction() as conn:
            runs.advance_states_cursor(conn, planned_at)

    @_given_memory
    def unread_storage_blocks(self) -> list[str]:
        with self._transaction() as conn:
            return runs.unread_storage_blocks(conn)

    @_given_memory
    def save_storage_blocks(self, blocks: Sequence[StorageBlock]) -> None:
        if blocks:
            with self._transaction() as conn:
                runs.save_storage_blocks(conn, blocks)

    # -- run logs and artifacts (SQL in logs.py; the plan, shared by backends, in log_progress.py) ---

    @_given_memory
    def logs_cursor(self) -> datetime | None:
        with self._transaction() as conn:
            return log_progress.logs_cursor(conn)

    @_given_memory
    def pending_log_runs(self, since: datetime, limit: int, after: tuple[str, str] | None = None) -> list[LogRun]:
        with self._transaction() as conn:
            return log_progress.pending_log_runs(conn, log_queries.DUCKDB, since, limit, after)

    @_given_memory
    def save_logs(self, page: Sequence[Log], mark: LogMark) -> WriteCounts:
        with self._transaction() as conn:
            return logs.save_logs(conn, page, mark)

    @_given_memory
    def save_artifacts(self, artifacts: Sequence[Artifact], mark: LogMark) -> WriteCounts:
        with self._transaction() as conn:
            return logs.save_artifacts(conn, artifacts, mark)

    @_given_memory
    def advance_logs_cursor(self, planned_at: datetime) -> None:
        with self._transaction() as conn:
            log_progress.advance_logs_cursor(conn, planned_at)

    # -- ledger --------------------------------------------------------------------------------

    @_given_memory
    def start_run(self, kind: str, since: datetime | None, until: datetime | None) -> uuid.UUID:
        """A new 'running' row in the ledger; rows still 'running' become 'interrupted'.

        Every writer holds the writer lock (lock.py) from before this call to after finish_run, so
        a row still 'running' here belongs to a process that died without finishing it.
        """
        ledger_id = uuid.uuid4()
        with self._transaction() as conn:
            conn.execute(ORPHAN_RUNS, {"error": ORPHANED_RUN_ERROR})
            conn.execute(START_RUN, {"id": str(ledger_id), "kind": kind, "started": datetime.now(timezone.utc),
                                      "since": since, "until": until})
        return ledger_id

    @_given_memory
    def finish_run(self, ledger_id: uuid.UUID, counters: dict[str, int], outcome: str, error: str | None = None) -> None:
        values = {name: int(counters.get(name, 0)) for name in LEDGER_COUNTERS}
        with self._transaction() as conn:
            conn.execute(FINISH_RUN, {"id": str(ledger_id), "finished": datetime.now(timezone.utc),
                                       "outcome": outcome, "error": error, **values})


def _event_columns(events: Sequence[Event], ids: list[str], now: datetime) -> tuple[list[Any], ...]:
    return (
        ids,
        [e.occurred for e in events],
        [e.received for e in events],
        [e.event for e in events],
        [e.resource_id for e in events],
        [compact_json(e.resource) for e in events],
        [compact_json(e.related) for e in events],
        [compact_json(e.payload) for e in events],
        [str(e.follows) if e.follows else None for e in events],
        [e.content_hash for e in events],
        [now] * len(events),
    )
