"""Every table of an archive, in one registry: how a row is identified, dated and told apart when replaced.

Whatever walks the whole archive table by table (`export`, `copy`) reads this list instead of
naming tables itself, so a table added by a migration is one entry here. Both backends hold the
same tables with the same columns (migrations/duckdb, migrations/postgresql).

- `key`: the columns that identify a row (the primary key; every column for event_resources,
  which has none: a row there is its event, resource and role).
- `time`: the row's natural time, the first of these columns that is not NULL; `export` writes a
  partition per UTC day of it. Empty: a small table written whole (flows, deployments, work pools).
- `version`: a column the writer sets anew whenever it replaces a row (archived_at): a replaced row
  changes a partition's fingerprint even when its key stays the same. None: rows are never replaced.
- `exported`: what users analyse. The rest is the archiver's own bookkeeping (the mark, the ledger,
  queues and cursors): a copy of the archive needs it, a data lake does not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    """One table of the archive, as the tools that walk every table need to know it."""

    name: str
    key: tuple[str, ...]
    time: tuple[str, ...] = ()
    version: str | None = None
    exported: bool = False

    @property
    def partitioned(self) -> bool:
        return bool(self.time)


TABLES: tuple[TableSpec, ...] = (
    # Events and the resources they name, by when they occurred (Prefect's own time for an event).
    TableSpec("events", key=("id",), time=("occurred",), version="archived_at", exported=True),
    TableSpec("event_resources", key=("event_id", "resource_id", "role"), time=("occurred",), exported=True),
    # Runs by when they were meant to start: set when a run is created or scheduled and rarely
    # changed, so a run stays in its day as it goes from Scheduled to Completed (start_time is NULL
    # until it starts, and would move it). `created` for the odd run without one, then archived_at.
    TableSpec("flow_runs", key=("id",), time=("expected_start_time", "created", "archived_at"), version="archived_at",
              exported=True),
    TableSpec("task_runs", key=("id",), time=("expected_start_time", "created", "archived_at"), version="archived_at",
              exported=True),
    TableSpec("run_states", key=("id",), time=("timestamp",), version="archived_at", exported=True),
    # Small dimension tables: written whole.
    TableSpec("flows", key=("id",), version="archived_at", exported=True),
    TableSpec("deployments", key=("id",), version="archived_at", exported=True),
    TableSpec("work_pools", key=("id",), version="archived_at", exported=True),
    TableSpec("result_storage_blocks", key=("id",), version="archived_at", exported=True),
    # The archiver's bookkeeping: what `status` reports (ledger, gaps, quarantine) and the cursors
    # and queues a sync resumes from.
    TableSpec("syncs", key=("id",)),
    TableSpec("gaps", key=("since", "until")),
    TableSpec("quarantine", key=("raw_hash",)),
    TableSpec("archive_state", key=("id",)),
    TableSpec("object_refresh_queue", key=("kind", "id")),
    TableSpec("run_state_fetches", key=("run_kind", "run_id")),
    TableSpec("run_states_progress", key=("id",)),
)

EXPORTED: tuple[TableSpec, ...] = tuple(table for table in TABLES if table.exported)


def table(name: str) -> TableSpec:
    """The spec of the table called `name`; KeyError for a name the archive has no table of."""
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(name)
