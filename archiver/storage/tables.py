"""Every table of an archive, once: its key, its page order, how it is moved whole (copy, export).

This is the one list. `copy` and `export` walk TABLES in order; a migration that adds a table
adds an entry here, or tests/unit/storage/test_tables.py fails (it compares this list with the
tables the migrations of every backend create). Views are not listed: they are computed from
these tables and come with the schema.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    """How one table is identified and paged.

    `key` orders the table and, when `unique`, identifies a row (its primary key): pages are read
    by keyset on it and written first-version-wins on it. A table with a `parent` has no key of
    its own (event_resources): its rows travel with the parent's rows they belong to (`parent_key`
    is the column holding the parent's key), written in the same transaction only for parent rows
    that were new. A `cursor` table is a single row (id = 1) whose `cursor` column only moves
    forward (the high-water mark): it is set last, once everything it vouches for is there.
    """

    name: str
    key: tuple[str, ...]
    unique: bool = True
    parent: str | None = None
    parent_key: str | None = None
    cursor: str | None = None
    page_rows: int = 5000  # rows per page; events are large (~4 KB each), their page smaller


TABLES: tuple[TableSpec, ...] = (
    TableSpec("events", ("id",), page_rows=2000),
    TableSpec("event_resources", ("event_id", "resource_id", "role"), unique=False, parent="events",
              parent_key="event_id"),
    TableSpec("quarantine", ("raw_hash",)),
    TableSpec("gaps", ("since", "until")),
    TableSpec("syncs", ("id",)),
    TableSpec("flows", ("id",)),
    TableSpec("deployments", ("id",)),
    TableSpec("work_pools", ("id",)),
    TableSpec("flow_runs", ("id",)),
    TableSpec("task_runs", ("id",)),
    TableSpec("object_refresh_queue", ("kind", "id")),
    TableSpec("run_states", ("id",)),
    TableSpec("run_state_fetches", ("run_kind", "run_id")),
    TableSpec("result_storage_blocks", ("id",)),
    # Cursors last: each claims what the tables above hold (the states pass's cursor, then the mark).
    TableSpec("run_states_progress", ("id",), cursor="events_archived_before"),
    TableSpec("archive_state", ("id",), cursor="high_water_mark"),
)

# Tables about the archive itself rather than what it archives: never copied or exported.
# schema_migrations is each backend's own; copy_progress describes copies into this archive.
BOOKKEEPING: frozenset[str] = frozenset({"schema_migrations", "copy_progress"})


def table(name: str) -> TableSpec:
    """The spec of the table called `name` (KeyError for one the registry does not know)."""
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def children(parent: str) -> tuple[TableSpec, ...]:
    """The tables whose rows travel with `parent`'s (event_resources with events)."""
    return tuple(spec for spec in TABLES if spec.parent == parent)
