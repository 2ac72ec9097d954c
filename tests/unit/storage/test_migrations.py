"""Migrations: an archive made at any earlier schema opens as the writer at the newest, keeping its rows."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb.migrate import BOOTSTRAP, available
from tests.unit.storage.shapes import T0

SCHEMAS = range(len(available()))  # an archive at each schema before the newest (0: only the bootstrap)
EVENT_ID, RUN = uuid.uuid4(), uuid.uuid4()


@pytest.fixture
def at_schema(backend: Archive) -> Callable[[int], None]:
    """Make the backend's archive as a version that knew only the first `n` migrations left it,
    with an event, the mark, a ledger row and a quarantined item if its schema has their tables."""
    def build(n: int) -> None:
        if not isinstance(backend, DuckDBArchive):
            raise AssertionError(f"no older schema for {backend!r}")
        with duckdb.connect(str(backend.path)) as conn:
            conn.execute(BOOTSTRAP)
            for migration in available()[:n]:
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

    return build


def test_a_new_archive_gets_every_migration(backend, writer, stored):
    assert stored("SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in available()]


@pytest.mark.parametrize("n", SCHEMAS)
def test_an_archive_at_an_earlier_schema_reaches_the_newest_and_keeps_its_rows(
        backend, at_schema, stored, make_event, n):
    at_schema(n)
    writer = backend.writer(timedelta(seconds=5))
    try:
        assert stored("SELECT version FROM schema_migrations ORDER BY version") == [(m.version,) for m in available()]
        if n >= 1:
            assert stored("SELECT id FROM events") == [(EVENT_ID,)]
            assert writer.high_water_mark() == T0 + timedelta(minutes=1)
            assert stored("SELECT outcome FROM syncs") == [("ok",)]
            assert stored("SELECT reason, resolved FROM quarantine") == [("missing id", None)]
        if n == 1:  # events archived before run metadata existed: its migration queues what they name
            assert writer.queued_objects("flow_runs", None, 10) == [str(RUN)]
        # And it writes as any archive does.
        assert writer.write_batch([make_event(T0 + timedelta(hours=1))]).inserted == 1
    finally:
        writer.close()
    # Opened again, there is nothing left to apply.
    again = backend.writer(timedelta(seconds=5))
    again.close()
    assert len(stored("SELECT version FROM schema_migrations")) == len(available())


def test_an_archive_from_a_newer_prefect_archiver_is_refused(backend, at_schema, stored):
    from archiver.errors import ArchiveIncompatible

    at_schema(len(available()))
    newest = available()[-1].version
    if isinstance(backend, DuckDBArchive):
        with duckdb.connect(str(backend.path)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES ($1, 'from_the_future', now())", [newest + 1])
    with pytest.raises(ArchiveIncompatible, match="upgrade prefect-archiver"):
        backend.writer(timedelta(seconds=5))
