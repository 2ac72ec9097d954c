"""The archive's writer: idempotent bulk writes, the high-water mark and the sync ledger.

The writer opens the file for one transaction and lets go (see connect.py), so `get` and
`status` in other processes answer while a sync runs; a backfill writing batch after batch keeps
it for up to HOLD_SECONDS at a time (DuckDBWriter.holding). Rows go in through DuckDB's own bulk path
(lists unnested in one INSERT … SELECT), never row by row; `INSERT OR IGNORE` on the primary
key makes every write idempotent, and RETURNING counts what was really new (rowcount is -1).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from archiver.errors import ArchiveError, BadInput
from archiver.ingest.report import LEDGER_COUNTERS
from archiver.ingest.windows import UNITS
from archiver.prefect.events import PIVOT, Event, Malformed, parse_event_id, to_utc
from archiver.storage.duckdb.connect import MAX_RETRY_DELAY, NO_EXTENSIONS, classify, require_duckdb_file, with_lock_retry
from archiver.storage.duckdb.lock import ORPHANED_RUN_ERROR
from archiver.storage.duckdb.migrate import migrate

log = logging.getLogger("archiver.storage.duckdb.writer")

# The longest a backfill keeps the file across consecutive batches (DuckDBWriter.holding). Every release
# costs a checkpoint on close and a fresh open (which loads the primary-key index again): measured
# 15 ms + 25-180 ms per 2,000-event batch, growing with the archive, against ~120 ms for the insert
# itself. When a hold ends the writer stays away for longer than a waiting reader's retry interval
# (connect.MAX_RETRY_DELAY), so a reader gets in within about HOLD_SECONDS plus one batch: without
# that pause the file was free for microseconds and readers polling it never got in.
HOLD_SECONDS = 0.5
READER_TURN_SECONDS = 2 * MAX_RETRY_DELAY
# No memory_limit on the writer: an insert checks the primary key, whose index grows with the
# archive, and a fixed cap fails every later sync of a large one (measured: with 128 MB, an
# INSERT OR IGNORE of 2,000 rows into a 5M-row table ran out of memory). DuckDB's default (80% of
# RAM) holds; a transaction's own size is bounded by ingest.BATCH_BYTES instead.
WRITER_CONFIG = dict(NO_EXTENSIONS)

_INSERT_EVENTS = """
INSERT OR IGNORE INTO events
SELECT * FROM (SELECT
    unnest($1::UUID[]), unnest($2::TIMESTAMPTZ[]), unnest($3::TIMESTAMPTZ[]), unnest($4::VARCHAR[]),
    unnest($5::VARCHAR[]), unnest($6::JSON[]), unnest($7::JSON[]), unnest($8::JSON[]),
    unnest($9::UUID[]), unnest($10::VARCHAR[]), unnest($11::TIMESTAMPTZ[]))
RETURNING id
"""
_INSERT_RESOURCES = """
INSERT INTO event_resources
SELECT * FROM (SELECT unnest($1::UUID[]), unnest($2::TIMESTAMPTZ[]), unnest($3::VARCHAR[]), unnest($4::VARCHAR[]))
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
    SELECT id FROM events WHERE id IN (SELECT unnest($1::UUID[])))
RETURNING raw_hash
"""

# The objects a batch's new events name (prefect.flow-run.<uuid>, …), queued for a metadata refresh
# in the same transaction as the events; object_kind() is the macro from migration 0002.
_QUEUE_OBJECTS = """
INSERT OR IGNORE INTO object_refresh_queue
SELECT DISTINCT object_kind(r), right(r, 36)::UUID, $2, 0
FROM (SELECT unnest($1::VARCHAR[]) AS r)
WHERE object_kind(r) <> ''
"""

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


def _save_objects_sql(kind: str) -> str:
    columns = {"id": "(o->>'id')::UUID", **OBJECT_COLUMNS[kind], "created": _as("o->>'created'", "TIMESTAMPTZ"),
               "updated": _as("o->>'updated'", "TIMESTAMPTZ"), "object": "o", "archived_at": "$2"}
    return (
        f"INSERT INTO {kind} ({', '.join(columns)}) "
        f"SELECT {', '.join(columns.values())} FROM (SELECT unnest($1::JSON[]) AS o)"
    )


@dataclass
class WriteCounts:
    """What one batch did to the archive."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    resolved: int = 0  # quarantined items whose real event is now archived
    conflicting_ids: list[str] = field(default_factory=list)


def to_json(value: Any) -> str:
    """A value as the compact JSON text the archive's JSON columns hold."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _uuid_text(value: str | None) -> str | None:
    """A quarantined item's event id as the archive spells it, or None if it is no UUID."""
    try:
        return str(parse_event_id(value)) if value else None
    except BadInput:
        return None


def _dedupe(events: Sequence[Event]) -> tuple[list[Event], int, list[Event]]:
    """First occurrence of each id wins; return (unique, repeats, repeats with other content)."""
    first: dict[uuid.UUID, Event] = {}
    repeats, conflicting = 0, []
    for event in events:
        seen = first.get(event.id)
        if seen is None:
            first[event.id] = event
            continue
        repeats += 1
        if seen.content_hash != event.content_hash:
            conflicting.append(event)
    return list(first.values()), repeats, conflicting


class DuckDBWriter:
    """The writer side of one archive file."""

    def __init__(self, path: Path, lock_timeout: timedelta = timedelta(seconds=15)) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"cannot create the archive's folder {path.parent}: {exc.strerror}") from None
        require_duckdb_file(path)  # never write into someone's SQLite file (or anything else)
        # NullPool: a pooled connection would keep DuckDB's file lock after a batch is committed.
        self.engine = sa.create_engine(f"duckdb:///{path}", poolclass=NullPool,
                                       connect_args={"config": dict(WRITER_CONFIG)})
        # The connection kept between transactions while holding() (None: the file is let go).
        self._held: sa.Connection | None = None
        self._held_since = 0.0
        self._holding = False
        self._lock = threading.RLock()  # transactions come from the writer and the main thread
        with_lock_retry(path, lock_timeout, lambda: migrate(self.engine))

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction on a connection opened for it; the file is released afterwards
        (inside holding(), kept for the next transaction while the hold is young)."""
        with self._lock:
            conn, self._held, keep = self._held, None, False
            if conn is None:
                conn = with_lock_retry(self.path, self.lock_timeout, self.engine.connect)
                self._held_since = time.monotonic()
            try:
                with conn.begin():
                    yield conn
                keep = self._holding and time.monotonic() - self._held_since < HOLD_SECONDS
            except sa.exc.DBAPIError as exc:
                self.engine.dispose()
                error = classify(self.path, exc.orig or exc) or ArchiveError(
                    f"writing to archive {self.path} failed ({str(exc.orig).splitlines()[0]}); the "
                    "transaction was rolled back, so the archive and its high-water mark are as they "
                    "were — the next sync continues from there"
                )
                raise error from exc
            finally:
                if keep:
                    self._held = conn
                else:
                    conn.close()
                    if self._holding:
                        time.sleep(READER_TURN_SECONDS)  # a waiting reader's turn (HOLD_SECONDS)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Let consecutive transactions share one connection, released every HOLD_SECONDS.

        For a backfill, whose batches follow each other as fast as they can be written: it
        saves the checkpoint and the reopen between them. Call release() before waiting for
        anything else (the network), so the file is never held while the writer is idle.
        """
        with self._lock:
            self._holding = True
        try:
            yield
        finally:
            with self._lock:
                self._holding = False
                self.release()

    def release(self) -> None:
        """Let go of the file if a hold kept it (readers and other writers can open it)."""
        with self._lock:
            conn, self._held = self._held, None
            if conn is not None:
                conn.close()

    # -- events --------------------------------------------------------------------------------

    def write_batch(
        self,
        events: Sequence[Event],
        malformed: Sequence[Malformed] = (),
        mark: datetime | None = None,
        sync_id: uuid.UUID | None = None,
    ) -> WriteCounts:
        """Insert events (first write wins), quarantine the malformed, advance the mark: atomically."""
        unique, repeats, conflicting = _dedupe(events)
        now = datetime.now(timezone.utc)
        counts = WriteCounts(duplicates=repeats)
        with self.transaction() as conn:
            inserted: set[uuid.UUID] = set()
            if unique:
                inserted = {row[0] for row in conn.exec_driver_sql(_INSERT_EVENTS, _event_columns(unique, now))}
            known = [e for e in unique if e.id not in inserted]
            if known:
                stored: dict[uuid.UUID, str] = dict(
                    conn.exec_driver_sql(
                        "SELECT id, content_hash FROM events WHERE id IN (SELECT unnest($1::UUID[]))",
                        ([str(e.id) for e in known],),
                    ).fetchall()
                )
                conflicting += [e for e in known if stored.get(e.id) != e.content_hash]
            new = [e for e in unique if e.id in inserted]
            if new:
                resources = _resource_columns(new)
                conn.exec_driver_sql(_INSERT_RESOURCES, resources)
                # Runs, flows and deployments recur in most of a batch's events: each once.
                conn.exec_driver_sql(_QUEUE_OBJECTS, (list(dict.fromkeys(resources[2])), now))
            if malformed:
                rows = conn.exec_driver_sql(
                    _INSERT_QUARANTINE,
                    (
                        [m.raw_hash for m in malformed],
                        [m.raw for m in malformed],
                        [m.reason for m in malformed],
                        [m.event_id for m in malformed],
                        [now] * len(malformed),
                        [str(sync_id) if sync_id else None] * len(malformed),
                    ),
                ).fetchall()
                counts.quarantined = len(rows)
            resolvable = [str(e.id) for e in unique] + [i for i in (_uuid_text(m.event_id) for m in malformed) if i]
            if resolvable:
                counts.resolved = len(conn.exec_driver_sql(_RESOLVE_QUARANTINE, (resolvable, now)).fetchall())
            if mark is not None:
                self._advance_mark(conn, mark)
        counts.inserted = len(new)
        # A malformed item quarantined before is a repeat too: fetched = inserted + duplicates + quarantined.
        counts.duplicates += len(known) + len(malformed) - counts.quarantined
        counts.conflicts = len(conflicting)
        counts.conflicting_ids = [str(e.id) for e in conflicting]
        for event in conflicting:
            log.warning("event %s arrived again with different content; the first archived version is kept", event.id)
        return counts

    @staticmethod
    def _advance_mark(conn: sa.Connection, mark: datetime) -> None:
        # The mark only moves forward.
        conn.exec_driver_sql(
            "UPDATE archive_state SET high_water_mark = greatest(coalesce(high_water_mark, $1), $1) WHERE id = 1",
            (mark,),
        )

    def advance_mark(self, mark: datetime) -> None:
        """Move the mark over a stretch known to hold no events (no rows to write with it)."""
        with self.transaction() as conn:
            self._advance_mark(conn, mark)

    def high_water_mark(self) -> datetime | None:
        with self.transaction() as conn:
            value = conn.exec_driver_sql("SELECT high_water_mark FROM archive_state WHERE id = 1").scalar()
        return to_utc(value) if value is not None else None

    def bucket_counts(self, since: datetime, until: datetime, unit: str) -> dict[datetime, int]:
        """Archived events per count-by bucket (aligned like the server's) in [since, until]."""
        size_us = UNITS[unit] // timedelta(microseconds=1)
        pivot_us = int(PIVOT.timestamp()) * 1_000_000
        with self.transaction() as conn:
            rows = conn.exec_driver_sql(
                "SELECT floor((epoch_us(occurred) - $1) / $2)::BIGINT AS bucket, count(*) FROM events "
                "WHERE occurred BETWEEN $3 AND $4 GROUP BY bucket",
                (pivot_us, size_us, since, until),
            ).fetchall()
        return {PIVOT + UNITS[unit] * bucket: count for bucket, count in rows}

    def newest_occurred_before(self, moment: datetime) -> datetime | None:
        """When the newest archived event before `moment` occurred (None if there is none)."""
        with self.transaction() as conn:
            value = conn.exec_driver_sql("SELECT max(occurred) FROM events WHERE occurred < $1", (moment,)).scalar()
        return to_utc(value) if value is not None else None

    def gaps(self) -> list[tuple[datetime, datetime]]:
        """The stretches recorded as possibly lost, oldest first."""
        with self.transaction() as conn:
            rows = conn.exec_driver_sql("SELECT since, until FROM gaps ORDER BY since").fetchall()
        return [(to_utc(since), to_utc(until)) for since, until in rows]

    def record_gap(self, since: datetime, until: datetime, sync_id: uuid.UUID) -> None:
        with self.transaction() as conn:
            conn.exec_driver_sql(
                "INSERT OR IGNORE INTO gaps VALUES ($1, $2, $3, $4)",
                (since, until, datetime.now(timezone.utc), str(sync_id)),
            )

    # -- run metadata ----------------------------------------------------------------------------

    def queued_objects(self, kind: str, after: str | None, limit: int) -> list[str]:
        """Ids of `kind` waiting for a refresh, in id order after `after` (keyset paging)."""
        with self.transaction() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id FROM object_refresh_queue WHERE kind = $1 AND ($2::UUID IS NULL OR id > $2::UUID) "
                "ORDER BY id LIMIT $3",
                (kind, after, limit),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def save_objects(self, kind: str, asked: Sequence[str], objects: Sequence[dict[str, Any]], give_up_after: int) -> int:
        """Replace the archived versions of `objects` and dequeue them; count a miss for the rest.

        An id the server did not return keeps its last archived version (if any) and stays queued
        until it has been missed `give_up_after` times; return how many were given up now.
        """
        found = [str(o["id"]) for o in objects]
        missing = sorted(set(asked) - set(found))
        with self.transaction() as conn:
            if objects:
                conn.exec_driver_sql(f"DELETE FROM {kind} WHERE id IN (SELECT unnest($1::UUID[]))", (found,))
                conn.exec_driver_sql(_save_objects_sql(kind), ([to_json(o) for o in objects], datetime.now(timezone.utc)))
                conn.exec_driver_sql(
                    "DELETE FROM object_refresh_queue WHERE kind = $1 AND id IN (SELECT unnest($2::UUID[]))", (kind, found)
                )
            if not missing:
                return 0
            conn.exec_driver_sql(
                "UPDATE object_refresh_queue SET attempts = attempts + 1 "
                "WHERE kind = $1 AND id IN (SELECT unnest($2::UUID[]))",
                (kind, missing),
            )
            given_up = conn.exec_driver_sql(
                "DELETE FROM object_refresh_queue WHERE kind = $1 AND attempts >= $2 RETURNING id", (kind, give_up_after)
            ).fetchall()
        return len(given_up)

    # -- ledger --------------------------------------------------------------------------------

    def start_run(self, kind: str, since: datetime | None, until: datetime | None) -> uuid.UUID:
        """A new 'running' row in the ledger; rows still 'running' become 'interrupted'.

        Every writer holds the sync lock (lock.py) from before this call to after finish_run, so
        a row still 'running' here belongs to a process that died without finishing it.
        """
        run_id = uuid.uuid4()
        with self.transaction() as conn:
            conn.exec_driver_sql(
                "UPDATE syncs SET outcome = 'interrupted', error = $1 WHERE outcome = 'running'",
                (ORPHANED_RUN_ERROR,),
            )
            conn.exec_driver_sql(
                "INSERT INTO syncs (id, kind, started, since, until, outcome) VALUES ($1, $2, $3, $4, $5, 'running')",
                (str(run_id), kind, datetime.now(timezone.utc), since, until),
            )
        return run_id

    def finish_run(
        self,
        run_id: uuid.UUID,
        counters: dict[str, int],
        outcome: str,
        error: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(LEDGER_COUNTERS, start=7))
        with self.transaction() as conn:
            conn.exec_driver_sql(
                "UPDATE syncs SET finished = $2, outcome = $3, error = $4, "
                "since = coalesce($5, since), until = coalesce($6, until), "
                "high_water_mark = (SELECT high_water_mark FROM archive_state WHERE id = 1), "
                f"{assignments} WHERE id = $1",
                (
                    str(run_id), datetime.now(timezone.utc), outcome, error, since, until,
                    *(int(counters.get(name, 0)) for name in LEDGER_COUNTERS),
                ),
            )


def _event_columns(events: Sequence[Event], now: datetime) -> tuple[list[Any], ...]:
    return (
        [str(e.id) for e in events],
        [e.occurred for e in events],
        [e.received for e in events],
        [e.event for e in events],
        [e.resource_id for e in events],
        [to_json(e.resource) for e in events],
        [to_json(e.related) for e in events],
        [to_json(e.payload) for e in events],
        [str(e.follows) if e.follows else None for e in events],
        [e.content_hash for e in events],
        [now] * len(events),
    )


def _resource_columns(events: Sequence[Event]) -> tuple[list[Any], ...]:
    event_ids, occurred, resource_ids, roles = [], [], [], []
    for e in events:
        pairs = [(e.resource_id, "")] + [
            (str(r.get("prefect.resource.id")), str(r.get("prefect.resource.role", "")))
            for r in e.related
            if r.get("prefect.resource.id") is not None
        ]
        for resource_id, role in pairs:
            event_ids.append(str(e.id))
            occurred.append(e.occurred)
            resource_ids.append(resource_id)
            roles.append(role)
    return event_ids, occurred, resource_ids, roles
