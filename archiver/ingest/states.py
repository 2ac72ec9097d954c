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
from archiver.prefect.runs import RUN_KINDS
from archiver.prefect.runs import run_kind as kind_of
from archiver.storage.writer import ArchiveWriter, PendingRun, RunState, StateFetch, StorageBlock

log = logging.getLogger("archiver.ingest.states")


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


def state_record(run_kind: str, run_id: str, state: dict[str, Any], now: datetime) -> RunState:
    """A state record as the archive keeps it: its result reference, if any, taken apart."""
    data = state.get("data")
    reference = result_reference(data)
    return RunState(
        id=str(state["id"]), run_kind=run_kind, run_id=run_id, type=str(state["type"]), name=state.get("name"),
        timestamp=parse_timestamp(state["timestamp"]), message=state.get("message") or None,
        state_details=state.get("state_details"),
        data_kind="result_reference" if reference else ("none" if data is None else "inline"),
        storage_key=reference["storage_key"] if reference else None,
        storage_block_id=reference["storage_block_id"] if reference else None,
        serializer_type=reference["serializer_type"] if reference else None,
        result_expiration=_timestamp_or_none(reference["expiration"]) if reference else None,
        result_prefect_version=reference["prefect_version"] if reference else None,
        state=state, archived_at=now,
    )


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
                        kind_of(run.run_kind).words, run.run_id, type(exc).__name__, exc)
            continue
        usable.append(state)
    return usable


def pending_runs(archive: ArchiveWriter, limit: int = MAX_RUNS_PER_PASS) -> tuple[list[PendingRun], datetime, bool]:
    """Runs whose states need reading (flow runs first, in id order, at most `limit`), when it was
    planned, and whether that is all of them."""
    planned_at = datetime.now(timezone.utc)
    pending: list[PendingRun] = []
    with archive.holding():  # three reads in a row: one opening of the archive, not three
        cursor = archive.states_cursor()
        since = cursor - CURSOR_MARGIN if cursor is not None else datetime.min.replace(tzinfo=timezone.utc)
        for kind in RUN_KINDS:
            room = limit - len(pending)
            # One row more than there is room for says whether this is all of them.
            runs = archive.pending_runs(kind.name, since, room + 1)
            pending += runs[:room]
            if len(runs) > room:
                return pending, planned_at, False
    return pending, planned_at, True


def save_states(
    archive: ArchiveWriter, read: list[tuple[PendingRun, list[dict[str, Any]] | None]], now: datetime | None = None,
) -> StatesReport:
    """Write the states read for a batch of runs and their ledger rows, in one transaction.

    States are replaced by id and never deleted: a run the server no longer has keeps its archive.
    """
    now = now or datetime.now(timezone.utc)
    records: list[RunState] = []
    fetches: list[StateFetch] = []
    for run, answered in read:
        states = _archivable(run, answered or [])
        records += [state_record(run.run_kind, run.run_id, state, now) for state in states]
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
                    run.newest_event.isoformat(), kind_of(run.run_kind).words, run.run_id, len(states),
                )
        fetches.append(StateFetch(run.run_kind, run.run_id, now, len(states), run.newest_event, covered_until, attempts))
    archive.save_states(records, fetches)
    return StatesReport(runs_read=len(read), states_saved=len(records))


def refresh_states(
    client: PrefectClient, archive: ArchiveWriter, *, concurrency: int = 4, batch: int = BATCH,
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
            done = save_states(archive, list(zip(runs, answers, strict=True)))
            report += done
    if stop.stopped:
        return report  # the cursor stays: the next pass plans the rest again
    if complete:
        archive.advance_states_cursor(planned_at)
    refresh_storage_blocks(client, archive)
    return report


def storage_block(block_id: str, document: dict[str, Any] | None) -> StorageBlock:
    """What locates results in a storage block: its name, type and (LocalFileSystem) basepath — no data."""
    if document is None:
        return StorageBlock(block_id, found=False)
    block_type = document.get("block_type") or {}
    slug = block_type.get("slug") if isinstance(block_type, dict) else None
    data = document.get("data") or {}
    basepath = data.get("basepath") if slug == "local-file-system" and isinstance(data, dict) else None
    return StorageBlock(block_id, True, document.get("name"), slug, basepath if isinstance(basepath, str) else None)


def refresh_storage_blocks(client: PrefectClient, archive: ArchiveWriter) -> int:
    """Read each result storage block that archived states reference for the first time; return how many."""
    blocks = [storage_block(block_id, client.read_block_document(block_id)) for block_id in archive.unread_storage_blocks()]
    archive.save_storage_blocks(blocks)
    return len(blocks)
