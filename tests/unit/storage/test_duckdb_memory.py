"""The DuckDB writer's memory limit: small to begin with, so a backfill's RSS does not grow with the
archive, and raised when a transaction needs more, so no write fails for it (writer.WRITER_MEMORY_MB)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import duckdb
import pytest
import sqlalchemy as sa

from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb import writer as duckdb_writer
from tests.unit.storage.shapes import T0


def _limit_of(writer: duckdb_writer.DuckDBWriter) -> str:
    with writer._transaction() as conn:
        return str(conn.execute(sa.text("SELECT current_setting('memory_limit')")).scalar())


def _as_duckdb_shows(megabytes: int) -> str:
    with duckdb.connect() as conn:
        conn.execute(f"SET memory_limit = '{megabytes}MB'")
        return str(conn.execute("SELECT current_setting('memory_limit')").fetchone()[0])  # type: ignore[index]


def test_the_writer_works_under_a_memory_limit_that_grows_with_the_indexed_rows(tmp_path, make_event):
    path = tmp_path / "archive.duckdb"
    writer = DuckDBArchive(path).writer(timedelta(seconds=5))
    try:
        assert _limit_of(writer) == _as_duckdb_shows(duckdb_writer.WRITER_MEMORY_MB)  # a new archive
        writer.write_batch([make_event(T0 + timedelta(seconds=i)) for i in range(20_000)])
    finally:
        writer.close()
    writer = DuckDBArchive(path).writer(timedelta(seconds=5))  # 40,001 resources now: 20,000 runs, their flows, a tag
    try:
        grown = duckdb_writer.WRITER_MEMORY_MB + 40_001 * duckdb_writer.INDEX_BYTES_PER_ROW["resource_spans"] // 2**20
        assert grown > duckdb_writer.WRITER_MEMORY_MB
        assert _limit_of(writer) == _as_duckdb_shows(grown)
    finally:
        writer.close()


def test_a_batch_that_needs_more_memory_than_the_limit_raises_it_and_is_archived_whole(
    tmp_path, monkeypatch, make_event
):
    monkeypatch.setattr(duckdb_writer, "WRITER_MEMORY_MB", 8)  # opens the file, but far less than 4,000 events need
    path = tmp_path / "archive.duckdb"
    writer = DuckDBArchive(path).writer(timedelta(seconds=5))
    events = [make_event(T0 + timedelta(seconds=i), flow_run=uuid.uuid4(),
                         payload={"validated_state": {"message": f"{i} " + "x" * 2000}}) for i in range(4000)]
    try:
        assert writer.high_water_mark() is None and writer.memory_limit_mb == 8  # sized at the first open
        counts = writer.write_batch(events, mark=events[-1].occurred)
        assert writer.memory_limit_mb is None or writer.memory_limit_mb > 8  # it did run out, and was retried
        assert counts.inserted == 4000
        assert writer.write_batch(events[:10]).inserted == 0  # and once: nothing doubled by the retry
        assert writer.high_water_mark() == events[-1].occurred
    finally:
        writer.close()
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (4000, 4000)
        assert conn.execute("SELECT count(*) FROM event_resources").fetchone() == (12000,)


@pytest.mark.parametrize("message", ["Out of Memory Error: could not allocate block of size 256.0 KiB",
                                     "Failed to commit: failed to pin block of size 256.0 KiB (19.0 MiB/19.0 MiB used)"])
def test_the_limit_doubles_up_to_duckdbs_default_and_then_errors_are_raised_as_they_are(tmp_path, monkeypatch, message):
    monkeypatch.setattr(duckdb_writer, "WRITER_MEMORY_CEILING_MB", 1000)
    writer = DuckDBArchive(tmp_path / "archive.duckdb").writer(timedelta(seconds=5))
    try:
        writer.memory_limit_mb = 96
        seen = [writer.memory_limit_mb]
        while writer._raise_memory_limit(duckdb.OutOfMemoryException(message)):
            seen.append(writer.memory_limit_mb)
        assert seen == [96, 192, 384, 768, None]
        writer.memory_limit_mb = 96
        assert not writer._raise_memory_limit(duckdb.ConstraintException("Duplicate key"))  # other errors are not retried
        assert writer.memory_limit_mb == 96
    finally:
        writer.close()
