"""Run states: archive the state records of the flow runs and task runs whose state changed.

State-change events carry the transition but not the record itself — its message, state_details
and `data` (the reference to a persisted result). Prefect serves the records one run at a time
(GET /flow_run_states/?flow_run_id=, GET /task_run_states/?task_run_id=), so a sync reads only
the runs that changed: those whose newest state event in the archive is newer than both their
newest archived state and what an earlier read already covered. Each batch of runs is written in
one transaction with its ledger rows, and the pass's cursor (events archived since the previous
pass) moves only once every planned run was read, so an interrupted pass resumes where it
stopped; a run the server no longer has keeps what was archived.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from archiver.ingest.stop import NEVER, StopToken
from archiver.prefect.client import PrefectClient
from archiver.prefect.events import parse_timestamp
from archiver.storage.duckdb.writer import DuckDBWriter, to_json

log = logging.getLogger("archiver.ingest.states")

RUN_KINDS = ("flow_run", "task_run")

# Runs read per transaction: a crash costs at most this many reads.
BATCH = 50

# The server records task-run states from the events the task engine sends, a little after they
# are emitted: a read that lacks the newest state event's state is tried on the next syncs, up to
# GIVE_UP_AFTER reads, unless that event is older than RECORDING_LAG (then the server has had its
# chance: a run it deleted or trimmed answers [] and is not asked again until a newer event).
GIVE_UP_AFTER = 5
RECORDING_LAG = timedelta(minutes=10)

# Runs read in one pass at most: the first sync after upgrading a large archive has every run to
# read (one request each), so it is spread over several syncs, each bounded in time and memory.
MAX_RUNS_PER_PASS = 20_000

# A pass looks at the state events archived since the previous completed pass began, less this
# margin for clocks stepping back between processes; re-planning those few events costs nothing.
CURSOR_MARGIN = timedelta(minutes=5)

# Runs with state events archived since the cursor, and runs still being retried; pending when
# their newest state event is newer than their newest archived state and than what an earlier
# read covered. The event columns are those of the flow_run_states / task_run_states views
# (migration 0003), read from `events` directly so the scan can skip by archived_at.
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
LEFT JOIN run_state_fetches f ON f.run_kind = $1 AND f.run_id = c.run_id
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
_PREFIXES = {"flow_run": "prefect.flow-run.%", "task_run": "prefect.task-run.%"}


_NEW_BLOCKS = """
SELECT DISTINCT storage_block_id FROM run_states
WHERE storage_block_id IS NOT NULL AND storage_block_id NOT IN (SELECT id FROM result_storage_blocks)
ORDER BY ALL
"""


@dataclass(frozen=True)
class PendingRun:
    """A run whose states need reading, and what the archive knew of it when planned."""

    run_kind: str
    run_id: str
    newest_event: datetime
    attempts: int
    covered_until: datetime | None


@dataclass(frozen=True)
class StatesReport:
    """Runs whose states were read, and state records written, in one pass or batch."""

    runs_read: int = 0
    states_saved: int = 0

    def __add__(self, other: StatesReport) -> StatesReport:
        return StatesReport(self.runs_read + other.runs_read, self.states_saved + other.states_saved)


def result_reference(data: Any) -> dict[str, Any] | None:
    """The persisted-result reference in a state's `data`, or None.

    Prefect 3 sends the result record's metadata (prefect/_internal/result_records.py,
    ResultRecordMetadata): storage_key, storage_block_id, serializer {type, ...}, expiration,
    prefect_version. Prefect 2 clients sent {"type": "reference", "storage_key", "storage_block_id",
    "serializer_type", ...} (PersistedResult); both are read.
    """
    if not isinstance(data, dict) or not isinstance(data.get("storage_key"), str):
        return None
    serializer = data.get("serializer")
    serializer_type = serializer.get("type") if isinstance(serializer, dict) else data.get("serializer_type")
    return {
        "storage_key": data["storage_key"],
        "storage_block_id": data.get("storage_block_id"),
        "serializer_type": serializer_type if isinstance(serializer_type, str) else None,
        "expiration": data.get("expiration"),
        "prefect_version": data.get("prefect_version"),
    }


def _timestamp_or_none(value: Any) -> datetime | None:
    try:
        return parse_timestamp(value) if value else None
    except ValueError:
        return None


def state_columns(run_kind: str, run_id: str, states: list[dict[str, Any]], now: datetime) -> tuple[list[Any], ...]:
    """The run_states columns for these state records, in table order."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(16))
    for state in states:
        data = state.get("data")
        reference = result_reference(data)
        kind = "result_reference" if reference else ("none" if data is None else "inline")
        expiration = reference and reference["expiration"]
        values = (
            str(state["id"]), run_kind, run_id, str(state["type"]), state.get("name"),
            parse_timestamp(state["timestamp"]), state.get("message") or None,
            to_json(state.get("state_details")), kind,
            reference and reference["storage_key"], reference and reference["storage_block_id"],
            reference and reference["serializer_type"], _timestamp_or_none(expiration),
            reference and reference["prefect_version"], to_json(state), now,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


def _archivable(run: PendingRun, states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The state records that can be archived as they are; the others are logged and left out.

    A record without an id or type, or with a time outside the years 1-9999, must not fail the
    pass on every later sync. The run's state-change events (archived already) still tell its story;
    a result's unreadable `expiration` only leaves that column empty (state_columns).
    """
    usable = []
    for state in states:
        try:
            uuid.UUID(str(state["id"]))
            if not isinstance(state["type"], str):
                raise TypeError(f"type {state['type']!r} is not a state type")
            parse_timestamp(state["timestamp"])
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("left out a state record of %s %s that cannot be archived (%s: %s)",
                        run.run_kind.replace("_", " "), run.run_id, type(exc).__name__, exc)
            continue
        usable.append(state)
    return usable


def pending_runs(archive: DuckDBWriter, limit: int = MAX_RUNS_PER_PASS) -> tuple[list[PendingRun], datetime, bool]:
    """Runs whose states need reading (flow runs first, in id order, at most `limit`), when it was
    planned, and whether that is all of them."""
    planned_at = datetime.now(timezone.utc)
    pending: list[PendingRun] = []
    with archive.transaction() as conn:
        cursor = conn.exec_driver_sql("SELECT events_archived_before FROM run_states_progress WHERE id = 1").scalar()
        since = cursor - CURSOR_MARGIN if cursor is not None else datetime.min.replace(tzinfo=timezone.utc)
        for kind in RUN_KINDS:
            room = limit - len(pending)
            # One row more than there is room for says whether this is all of them.
            rows = conn.exec_driver_sql(_PENDING, (kind, since, _PREFIXES[kind], room + 1)).fetchall()
            for run_id, newest, attempts, covered in rows[:room]:
                pending.append(PendingRun(kind, str(run_id), newest, attempts or 0, covered))
            if len(rows) > room:
                return pending, planned_at, False
    return pending, planned_at, True


def save_states(
    archive: DuckDBWriter, read: list[tuple[PendingRun, list[dict[str, Any]] | None]], now: datetime | None = None,
) -> StatesReport:
    """Write the states read for a batch of runs and their ledger rows, in one transaction.

    States are replaced by id and never deleted: a run the server no longer has keeps its archive.
    """
    now = now or datetime.now(timezone.utc)
    columns: tuple[list[Any], ...] = tuple([] for _ in range(16))
    ledger: tuple[list[Any], ...] = tuple([] for _ in range(7))
    for run, answered in read:
        states = _archivable(run, answered or [])
        for column, values in zip(columns, state_columns(run.run_kind, run.run_id, states, now), strict=True):
            column.extend(values)
        newest = max((parse_timestamp(s["timestamp"]) for s in states), default=None)
        attempts = 0
        covered_until: datetime | None = run.newest_event
        if newest is None or newest < run.newest_event:
            attempts = run.attempts + 1
            if attempts < GIVE_UP_AFTER and now - run.newest_event < RECORDING_LAG:
                covered_until = run.covered_until
            else:
                attempts = 0
                log.info(
                    "the server has no %s state of %s %s (it answered %d states); the archive keeps what it has",
                    run.newest_event.isoformat(), run.run_kind.replace("_", " "), run.run_id, len(states),
                )
        row = (run.run_kind, run.run_id, now, len(states), run.newest_event, covered_until, attempts)
        for column, value in zip(ledger, row, strict=True):
            column.append(value)
    with archive.transaction() as conn:
        if columns[0]:
            conn.exec_driver_sql("DELETE FROM run_states WHERE id IN (SELECT unnest($1::UUID[]))", (columns[0],))
            conn.exec_driver_sql(_INSERT_STATES, columns)
        if ledger[0]:
            conn.exec_driver_sql(_SAVE_FETCHES, ledger)
    return StatesReport(runs_read=len(read), states_saved=len(columns[0]))


def _advance_cursor(archive: DuckDBWriter, planned_at: datetime) -> None:
    """Every state event archived before `planned_at` has been planned for; the cursor only moves forward."""
    with archive.transaction() as conn:
        conn.exec_driver_sql(
            "UPDATE run_states_progress SET events_archived_before = "
            "greatest(coalesce(events_archived_before, $1), $1) WHERE id = 1",
            (planned_at,),
        )


def refresh_states(
    client: PrefectClient, archive: DuckDBWriter, *, concurrency: int = 4, batch: int = BATCH,
    max_runs: int = MAX_RUNS_PER_PASS, stop: StopToken = NEVER,
) -> StatesReport:
    """Read the states of the runs that changed since their states were last read, and archive them."""
    report = StatesReport()
    pending, planned_at, complete = pending_runs(archive, max_runs)
    if pending:
        log.info("reading the states of %d changed flow and task runs", len(pending))
    if not complete:
        log.info("more than %d runs have states to read: the next syncs read the rest", max_runs)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="states") as pool:
        for start in range(0, len(pending), batch):
            if stop.stopped:
                break
            runs = pending[start:start + batch]
            answers = list(pool.map(lambda run: client.read_run_states(run.run_kind, run.run_id), runs))
            report += save_states(archive, list(zip(runs, answers, strict=True)))
    if stop.stopped:
        return report  # the cursor stays: the next pass plans the rest again
    if complete:
        _advance_cursor(archive, planned_at)
    refresh_storage_blocks(client, archive)
    return report


def storage_block_row(block_id: str, document: dict[str, Any] | None) -> tuple[Any, ...]:
    """What locates results in a storage block: its name, type and (LocalFileSystem) basepath — no data."""
    if document is None:
        return (block_id, False, None, None, None)
    block_type = document.get("block_type") or {}
    slug = block_type.get("slug") if isinstance(block_type, dict) else None
    data = document.get("data") or {}
    basepath = data.get("basepath") if slug == "local-file-system" and isinstance(data, dict) else None
    return (block_id, True, document.get("name"), slug, basepath if isinstance(basepath, str) else None)


def refresh_storage_blocks(client: PrefectClient, archive: DuckDBWriter) -> int:
    """Read each result storage block that archived states reference for the first time; return how many."""
    with archive.transaction() as conn:
        block_ids = [str(row[0]) for row in conn.exec_driver_sql(_NEW_BLOCKS)]
    rows = [storage_block_row(block_id, client.read_block_document(block_id)) for block_id in block_ids]
    if rows:
        now = datetime.now(timezone.utc)
        with archive.transaction() as conn:
            for row in rows:
                conn.exec_driver_sql("INSERT OR REPLACE INTO result_storage_blocks VALUES ($1, $2, $3, $4, $5, $6)", (*row, now))
    return len(rows)
