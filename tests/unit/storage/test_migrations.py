"""Migrations: an archive made at any earlier schema opens as the writer at the newest, keeping its rows.

Each backend numbers its own migrations. DuckDB's earlier schemas are 0 (only the bootstrap) to
10; a PostgreSQL archive's are 0 (an empty database) to 5.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from archiver.prefect.events import compact_json
from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb import migrate as duckdb_migrate
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.postgresql import migrate as postgresql_migrate
from tests.unit.storage.conftest import BACKENDS
from tests.unit.storage.shapes import T0
from tests.unit.storage.test_events import SPANS, SPANS_OF_ROWS

MIGRATIONS = {"duckdb": duckdb_migrate, "postgresql": postgresql_migrate}
EVENT_ID, RUN = uuid.uuid4(), uuid.uuid4()


# An archive at each schema before its backend's newest (0: only the bootstrap), per backend.
EARLIER = [(name, n) for name in BACKENDS for n in range(len(MIGRATIONS[name].available()))]


def available(backend: Archive) -> list[duckdb_migrate.Migration] | list[postgresql_migrate.Migration]:
    return MIGRATIONS["duckdb" if isinstance(backend, DuckDBArchive) else "postgresql"].available()


@pytest.fixture
def at_schema(backend: Archive) -> Callable[[int], None]:
    """Make the backend's archive as a version that knew only the first `n` migrations left it,
    with an event, the mark, a ledger row and a quarantined item if its schema has their tables."""
    def build(n: int) -> None:
        if isinstance(backend, PostgreSQLArchive):
            _build_postgresql(backend, n)
            return
        if not isinstance(backend, DuckDBArchive):
            raise AssertionError(f"no older schema for {backend!r}")
        with duckdb.connect(str(backend.path)) as conn:
            conn.execute(duckdb_migrate.BOOTSTRAP)
            for migration in duckdb_migrate.available()[:n]:
                conn.execute(migration.sql)
                conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                             [migration.version, migration.name, datetime.now(timezone.utc)])
            if n >= 1:  # 0001 made events, archive_state, syncs and quarantine
                conn.execute(
                    "INSERT INTO events VALUES ($1, $2, NULL, 'prefect.flow-run.Completed', $3, $4, '[]', '{}', "
                    "NULL, 'hash', $2)",
                    [str(EVENT_ID), T0, f"prefect.flow-run.{RUN}",
                     f'{{"prefect.resource.id":"prefect.flow-run.{RUN}"}}'])
                conn.execute("INSERT INTO event_resources VALUES ($1, $2, $3, '')",
                             [str(EVENT_ID), T0, f"prefect.flow-run.{RUN}"])
                conn.execute("UPDATE archive_state SET high_water_mark = $1", [T0 + timedelta(minutes=1)])
                conn.execute("INSERT INTO syncs (id, kind, started, outcome) VALUES (gen_random_uuid(), 'sync', $1, 'ok')",
                             [T0])
                conn.execute("INSERT INTO quarantine (raw_hash, raw, reason, first_seen) VALUES ('h', '{}', 'missing id', $1)",
                             [T0])
            if n >= 9:  # 0009 made event_days, which the writer keeps with the events
                conn.execute("INSERT INTO event_days VALUES ($1, 1)", [T0.date()])

    return build


def _build_postgresql(backend: PostgreSQLArchive, n: int) -> None:
    """A PostgreSQL archive at its first `n` migrations, each recorded (n = 1: today's schema, with rows)."""
    import psycopg

    with psycopg.connect(backend.url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute(postgresql_migrate.BOOTSTRAP)
        for migration in postgresql_migrate.available()[:n]:
            conn.execute(migration.sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                         [migration.version, migration.name, datetime.now(timezone.utc)])
        if n >= 1:
            conn.execute(
                "INSERT INTO events VALUES (%s, %s, NULL, 'prefect.flow-run.Completed', %s, %s, '[]', '{}', NULL, "
                "'hash', %s)",
                [EVENT_ID, T0, f"prefect.flow-run.{RUN}", f'{{"prefect.resource.id":"prefect.flow-run.{RUN}"}}', T0])
            conn.execute("INSERT INTO event_resources VALUES (%s, %s, %s, '')", [EVENT_ID, T0, f"prefect.flow-run.{RUN}"])
            conn.execute("UPDATE archive_state SET high_water_mark = %s", [T0 + timedelta(minutes=1)])
            conn.execute("INSERT INTO syncs (id, kind, started, outcome) VALUES (gen_random_uuid(), 'sync', %s, 'ok')",
                         [T0])
            conn.execute("INSERT INTO quarantine (raw_hash, raw, reason, first_seen) VALUES ('h', '{}', 'missing id', %s)",
                         [T0])
        if n >= 5:  # 0005 made event_days, which the writer keeps with the events
            conn.execute("INSERT INTO event_days VALUES (%s, 1)", [T0.date()])


def test_a_new_archive_gets_every_migration(backend, writer, stored):
    assert stored("SELECT version FROM schema_migrations ORDER BY version") == [
        (m.version,) for m in available(backend)]


@pytest.mark.parametrize(("backend", "n"), EARLIER, indirect=["backend"], ids=[f"{b}-{n}" for b, n in EARLIER])
def test_an_archive_at_an_earlier_schema_reaches_the_newest_and_keeps_its_rows(
        backend, at_schema, stored, make_event, n):
    at_schema(n)
    writer = backend.writer(timedelta(seconds=5))
    try:
        assert stored("SELECT version FROM schema_migrations ORDER BY version") == [
            (m.version,) for m in available(backend)]
        if n >= 1:
            assert stored("SELECT id FROM events") == [(EVENT_ID,)]
            assert writer.high_water_mark() == T0 + timedelta(minutes=1)
            assert stored("SELECT outcome FROM syncs") == [("ok",)]
            assert stored("SELECT reason, resolved FROM quarantine") == [("missing id", None)]
        if n == 1 and isinstance(backend, DuckDBArchive):  # events from before run metadata: 0002 queues them
            assert writer.queued_objects("flow_runs", None, 10) == [str(RUN)]
        # And it writes as any archive does.
        assert writer.write_batch([make_event(T0 + timedelta(hours=1))]).inserted == 1
        if n >= 1:  # event_days was filled from the events already there, then kept by the writer
            assert [(str(d), e) for d, e in stored("SELECT day, events FROM event_days")] == [(str(T0.date()), 2)]
            # resource_spans likewise: the old event's resource at T0, the new one's after.
            assert stored(SPANS) == stored(SPANS_OF_ROWS)
            assert (f"prefect.flow-run.{RUN}", T0, T0) in stored(SPANS)
    finally:
        writer.close()
    # Opened again, there is nothing left to apply.
    again = backend.writer(timedelta(seconds=5))
    again.close()
    assert len(stored("SELECT version FROM schema_migrations")) == len(available(backend))


def test_an_archive_from_a_newer_prefect_archiver_is_refused(backend, at_schema, stored):
    from archiver.errors import ArchiveIncompatible

    at_schema(len(available(backend)))
    newest = available(backend)[-1].version
    if isinstance(backend, DuckDBArchive):
        with duckdb.connect(str(backend.path)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES ($1, 'from_the_future', now())", [newest + 1])
    elif isinstance(backend, PostgreSQLArchive):
        import psycopg

        with psycopg.connect(backend.url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 'from_the_future', now())", [newest + 1])
    with pytest.raises(ArchiveIncompatible, match="upgrade prefect-archiver"):
        backend.writer(timedelta(seconds=5))


@pytest.mark.parametrize("backend", ["duckdb"], indirect=True)
def test_events_lose_their_primary_key_and_keep_every_row_column_and_order(backend, at_schema, stored, make_event):
    """0010 rebuilds events without its key: the same rows in the same stored order, the same columns,
    types and NOT NULLs, and the views over events read the new table."""
    at_schema(9)
    events = [make_event(T0 + timedelta(minutes=i), name="prefect.flow-run.Running") for i in range(50)]
    with duckdb.connect(str(backend.path)) as conn:  # stored out of id order, as uuid4 ids are
        conn.executemany("INSERT INTO events VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", [
            [str(e.id), e.occurred, e.received, e.event, e.resource_id, compact_json(e.resource), compact_json(e.related),
             compact_json(e.payload), None, e.content_hash, T0] for e in events])
    columns = "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 'events' " \
              "ORDER BY ordinal_position"
    before_columns, before_rows = stored(columns), stored("SELECT * FROM events ORDER BY rowid")
    assert stored("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'events' "
                  "AND constraint_type = 'PRIMARY KEY'") == [(1,)]
    backend.writer(timedelta(seconds=5)).close()
    assert stored(columns) == before_columns
    assert stored("SELECT * FROM events ORDER BY rowid") == before_rows
    assert stored("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'events' "
                  "AND constraint_type = 'PRIMARY KEY'") == [(0,)]
    assert stored("SELECT count(*) FROM flow_run_states WHERE state_name = 'Running'") == [(50,)]
    assert stored("SELECT sum(events) FROM event_volume") == [(51,)]


_CATALOG = [
    "SELECT table_name, column_index, column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
    "WHERE NOT internal ORDER BY ALL",
    "SELECT table_name, constraint_type, constraint_text FROM duckdb_constraints() ORDER BY ALL",
    "SELECT table_name, index_name, sql FROM duckdb_indexes() ORDER BY ALL",
    "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL",
    "SELECT function_name, macro_definition FROM duckdb_functions() WHERE function_type LIKE '%macro' "
    "AND NOT internal ORDER BY ALL",
]


def test_a_new_duckdb_archive_migrated_at_once_has_the_schema_file_by_file_gives(tmp_path):
    one_by_one = tmp_path / "one-by-one.duckdb"
    with duckdb.connect(str(one_by_one)) as conn:  # how an archive upgraded release by release got its schema
        conn.execute(duckdb_migrate.BOOTSTRAP)
        for migration in duckdb_migrate.available():
            conn.execute("BEGIN")
            conn.execute(migration.sql)
            conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", [migration.version, migration.name])
            conn.execute("COMMIT")
            conn.execute("CHECKPOINT")
    at_once = tmp_path / "new.duckdb"
    DuckDBArchive(at_once).writer(timedelta(seconds=5)).close()

    def catalog(path):
        with duckdb.connect(str(path), read_only=True) as conn:
            return [conn.execute(sql).fetchall() for sql in _CATALOG]

    new, upgraded = catalog(at_once), catalog(one_by_one)
    assert all(new) and new == upgraded  # every part of the catalog found, and the same


@pytest.mark.parametrize("backend", ["duckdb"], indirect=True)
def test_a_reader_finds_events_by_resource_in_an_archive_from_before_resource_spans(backend, at_schema, stored):
    """A reader cannot upgrade the file: an archive at 0010 has the resource_id index and no spans."""
    from archiver.prefect.filters import EventFilter, RelatedMatch, ResourceMatch

    at_schema(10)
    assert stored("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'resource_spans'") == [(0,)]
    run = f"prefect.flow-run.{RUN}"
    window = (T0 - timedelta(days=1), T0 + timedelta(days=1))
    reader = backend.reader(timedelta(seconds=5))
    for search in (EventFilter(*window, any_resource=(ResourceMatch(ids=(run,)),)),
                   EventFilter(*window, related=(RelatedMatch(ids=(run,), roles=("",)),))):
        page = reader.page(search, limit=10)
        assert [e["id"] for e in page.events] == [str(EVENT_ID)] and page.total == 1
    assert reader.count(EventFilter(*window, any_resource=(ResourceMatch(ids=("prefect.flow-run.other",)),))) == 0
