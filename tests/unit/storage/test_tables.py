"""The table registry (storage/tables.py) names every table the migrations create, on every backend."""

from __future__ import annotations

from datetime import timedelta

from archiver.storage.base import Archive
from archiver.storage.tables import BOOKKEEPING, TABLES, children, table


def test_the_registry_names_every_table_the_migrations_create(backend: Archive) -> None:
    backend.writer(timedelta(seconds=5)).close()
    source = backend.table_source(timedelta(seconds=5))
    try:
        listed = {spec.name for spec in TABLES}
        for name in listed | BOOKKEEPING:
            assert source.columns(name) is not None, f"{name} is in the registry but no migration creates it"
    finally:
        source.close()
    created = _tables(backend)
    unlisted = created - listed - BOOKKEEPING
    assert not unlisted, f"add a TableSpec to storage/tables.py for {sorted(unlisted)}"


def test_every_key_column_exists_and_children_follow_their_parent(backend: Archive) -> None:
    backend.writer(timedelta(seconds=5)).close()
    source = backend.table_source(timedelta(seconds=5))
    try:
        for spec in TABLES:
            names = {c.name for c in source.columns(spec.name) or []}
            assert set(spec.key) <= names, spec
            if spec.parent:
                assert spec.parent_key in names and len(table(spec.parent).key) == 1, spec
                assert [s.name for s in TABLES].index(spec.parent) < [s.name for s in TABLES].index(spec.name)
            if spec.cursor:
                assert spec.cursor in names and spec.key == ("id",), spec
    finally:
        source.close()
    assert [c.name for c in children("events")] == ["event_resources"]
    # The cursors come last: the mark vouches for every table above it.
    assert [s.name for s in TABLES if s.cursor][-1] == TABLES[-1].name == "archive_state"


def _tables(backend: Archive) -> set[str]:
    """The base tables (not views) in the archive's schema, asked of the database itself."""
    from archiver.storage.duckdb import DuckDBArchive
    from tests.unit.storage.conftest import query_postgresql

    sql = ("SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
           "AND table_schema = {schema}")
    if isinstance(backend, DuckDBArchive):
        import duckdb

        with duckdb.connect(str(backend.path), read_only=True) as conn:
            return {row[0] for row in conn.execute(sql.format(schema="'main'")).fetchall()}
    return {row[0] for row in query_postgresql(backend.url, sql.format(schema="current_schema()"))}
