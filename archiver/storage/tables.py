"""Every table of an archive, once: its key, how it is paged and dated, whether analysts get it.

This is the one list. Whatever walks the whole archive table by table (`copy`, `export`) reads it
instead of naming tables itself; a migration that adds a table adds an entry here, or
tests/unit/storage/test_tables.py fails (it compares this list with the tables the migrations of
every backend create). Views are not listed: they are computed from these tables and come with
the schema. Both backends hold the same tables with the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    """One table of the archive, as the tools that walk every table need to know it.

    - `key` orders the table and, when `unique`, identifies a row (its primary key): `copy` reads
      pages by keyset on it and writes first-version-wins on it. A table with a `parent` has no key
      of its own (event_resources): its rows travel with the parent's rows they belong to
      (`parent_key` is the column holding the parent's key), written in the same transaction only
      for parent rows that were new. A `cursor` table is a single row (id = 1) whose `cursor`
      column only moves forward (a high-water mark): `copy` sets it last, once everything it
      vouches for is there. `page_rows`: rows per page (events are large, ~4 KB each).
    - `time`: the row's natural time, the first of these columns that is not NULL; `export` writes
      a partition per UTC day of it. Empty: a small table written whole (flows, deployments …).
    - `version`: a column the writer sets anew whenever it replaces a row (archived_at): a replaced
      row changes a partition's fingerprint even when its key stays the same. None: never replaced.
    - `exported`: what users analyse. The rest is the archiver's own bookkeeping (the mark, the
      ledger, queues and cursors): a copy of the archive needs it, a data lake does not.
    - `derived`: computed from other tables and kept with them by the writer (event_days from
      events, resource_spans from event_resources): `copy` rebuilds it in the destination once
      those are copied, rather than copying it.
    """

    name: str
    key: tuple[str, ...]
    unique: bool = True
    parent: str | None = None
    parent_key: str | None = None
    cursor: str | None = None
    page_rows: int = 5000
    time: tuple[str, ...] = ()
    version: str | None = None
    exported: bool = False
    derived: bool = False

    @property
    def partitioned(self) -> bool:
        return bool(self.time)


# Runs are dated by when they were meant to start: set when a run is created or scheduled and rarely
# changed, so a run stays in its day as it goes from Scheduled to Completed (start_time is NULL until
# it starts, and would move it). `created` for the odd run without one, then archived_at.
_RUN_TIME = ("expected_start_time", "created", "archived_at")

TABLES: tuple[TableSpec, ...] = (
    # Events and the resources they name, by when they occurred (Prefect's own time for an event).
    TableSpec("events", ("id",), page_rows=2000, time=("occurred",), version="archived_at", exported=True),
    TableSpec("event_resources", ("event_id", "resource_id", "role"), unique=False, parent="events",
              parent_key="event_id", time=("occurred",), exported=True),
    # Events per UTC day (the overview's volume chart): derived from events.
    TableSpec("event_days", ("day",), derived=True),
    # When each resource was first and last named (lookups by resource id read between): from event_resources.
    TableSpec("resource_spans", ("resource_id",), derived=True),
    TableSpec("quarantine", ("raw_hash",)),
    TableSpec("gaps", ("since", "until")),
    TableSpec("syncs", ("id",)),
    # Small dimension tables: exported whole.
    TableSpec("flows", ("id",), version="archived_at", exported=True),
    TableSpec("deployments", ("id",), version="archived_at", exported=True),
    TableSpec("work_pools", ("id",), version="archived_at", exported=True),
    TableSpec("flow_runs", ("id",), time=_RUN_TIME, version="archived_at", exported=True),
    TableSpec("task_runs", ("id",), time=_RUN_TIME, version="archived_at", exported=True),
    TableSpec("object_refresh_queue", ("kind", "id")),
    TableSpec("run_states", ("id",), time=("timestamp",), version="archived_at", exported=True),
    TableSpec("run_state_fetches", ("run_kind", "run_id")),
    TableSpec("result_storage_blocks", ("id",), version="archived_at", exported=True),
    # Run logs by when they were logged (never replaced: the first version of a log id is kept);
    # artifacts by when they were created (replaced when the server's copy is newer).
    TableSpec("logs", ("id",), time=("timestamp",), exported=True),
    TableSpec("artifacts", ("id",), time=("created", "archived_at"), version="archived_at", exported=True),
    TableSpec("log_progress", ("run_kind", "run_id")),
    # Cursors last: each claims what the tables above hold (the states and logs passes' cursors, then the mark).
    TableSpec("run_states_progress", ("id",), cursor="events_archived_before"),
    TableSpec("logs_pass", ("id",), cursor="runs_archived_before"),
    TableSpec("archive_state", ("id",), cursor="high_water_mark"),
)

EXPORTED: tuple[TableSpec, ...] = tuple(spec for spec in TABLES if spec.exported)

# Tables about the archive itself rather than what it archives: never copied or exported.
# schema_migrations is each backend's own; copy_progress describes copies into this archive.
BOOKKEEPING: frozenset[str] = frozenset({"schema_migrations", "copy_progress"})


def table(name: str) -> TableSpec:
    """The spec of the table called `name`; KeyError for a name the archive has no table of."""
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def children(parent: str) -> tuple[TableSpec, ...]:
    """The tables whose rows travel with `parent`'s (event_resources with events)."""
    return tuple(spec for spec in TABLES if spec.parent == parent)
