"""What only a PostgreSQL archive's reader does: never wait for the writer, hold no transaction
between calls, survive a dropped connection, and never show the URL's password.

The answers every backend gives alike are in test_reader_contract.py; these talk to the same real
server (the postgres_database fixture), through the writer for what they store.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from archiver.errors import ArchiveBusy, ArchiveMissing, RunNotFound
from archiver.prefect.events import Event, format_timestamp, parse_event
from archiver.prefect.filters import EventFilter
from archiver.storage import open_archive
from archiver.storage.postgresql.pool import READER_NAME, conninfo

UTC = timezone.utc
TIMEOUT = timedelta(seconds=5)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERYTHING = EventFilter(datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
PASSWORD = "s3cret-pw"


def an_event(occurred: datetime) -> Event:
    parsed = parse_event({"occurred": format_timestamp(occurred), "event": "acme.tick", "id": str(uuid.uuid4()),
                          "resource": {"prefect.resource.id": "acme.clock"}, "related": [], "payload": {}})
    assert isinstance(parsed, Event)
    return parsed


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(url), autocommit=True)


def readers_of(url: str) -> list[tuple[str, str | None]]:
    """(state, query) of the reader connections to the archive's database, as the server sees them."""
    with connect(url) as conn:
        return [(state, query) for state, query in conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [READER_NAME])]


def test_a_read_does_not_wait_for_a_writer_transaction_still_open(postgres_database: str) -> None:
    archive = open_archive(postgres_database)
    archive.writer(TIMEOUT).write_batch([an_event(T0)], [], mark=T0 + timedelta(seconds=1))
    with connect(postgres_database) as writing:
        writing.execute("BEGIN")
        writing.execute("UPDATE archive_state SET high_water_mark = %s WHERE id = 1", [T0 + timedelta(hours=1)])
        writing.execute("DELETE FROM events")
        started = time.monotonic()
        reader = archive.reader(TIMEOUT)
        # The last committed batch, whole: neither the uncommitted mark nor the uncommitted delete.
        with reader.session() as session:
            assert (session.high_water_mark(), session.count(EVERYTHING)) == (T0 + timedelta(seconds=1), 1)
        assert reader.status(T0).events == 1
        assert time.monotonic() - started < 1.0
        writing.execute("ROLLBACK")


def test_a_read_behind_a_migration_waits_its_timeout_then_says_busy(postgres_database: str) -> None:
    archive = open_archive(postgres_database)
    archive.writer(TIMEOUT).write_batch([an_event(T0)], [])
    with connect(postgres_database) as migrating:
        migrating.execute("BEGIN")
        migrating.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # what an ALTER TABLE takes
        started = time.monotonic()
        with pytest.raises(ArchiveBusy, match="being upgraded"):
            archive.reader(timedelta(milliseconds=300)).count(EVERYTHING)
        assert 0.25 < time.monotonic() - started < 3
        migrating.execute("ROLLBACK")
    assert archive.reader(TIMEOUT).count(EVERYTHING) == 1


def test_a_reader_holds_no_transaction_between_calls_or_after_a_session(postgres_database: str) -> None:
    archive = open_archive(postgres_database)
    archive.writer(TIMEOUT).write_batch([an_event(T0)], [], mark=T0)
    reader = archive.reader(TIMEOUT)
    reader.status(T0)
    with reader.session(timedelta(seconds=5)) as session:
        session.count(EVERYTHING)
        assert any(state == "idle in transaction" for state, _ in readers_of(postgres_database))
    reader.page(EVERYTHING, 1)
    states = readers_of(postgres_database)
    assert states and all(state == "idle" for state, _ in states)


def test_a_reader_replaces_a_connection_the_server_dropped(postgres_database: str) -> None:
    archive = open_archive(postgres_database)
    archive.writer(TIMEOUT).write_batch([an_event(T0)], [])
    reader = archive.reader(TIMEOUT)
    assert reader.count(EVERYTHING) == 1  # its connection now waits idle for the next call
    with reader.session() as session:  # two idle connections now: the call's and the session's
        assert reader.count(EVERYTHING) == session.count(EVERYTHING) == 1

    def in_session() -> int:
        with reader.session() as session:
            return session.count(EVERYTHING)

    for read in (lambda: reader.count(EVERYTHING), in_session):
        with connect(postgres_database) as admin:  # the server drops them (a restart, an idle timeout)
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                          [READER_NAME])
        assert read() == 1


def test_no_read_shows_the_password(postgres_database: str) -> None:
    url = postgres_database.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{PASSWORD}@", 1)
    archive = open_archive(url)
    with pytest.raises(ArchiveMissing) as missing:
        archive.reader(TIMEOUT).event(uuid.uuid4())
    archive.writer(TIMEOUT).write_batch([an_event(T0)], [], mark=T0)
    reader = archive.reader(TIMEOUT)
    with pytest.raises(RunNotFound) as not_found:
        reader.run_history(uuid.uuid4())
    elsewhere = open_archive(url.replace("/archive_", "/nothing_", 1)).reader(TIMEOUT)
    with pytest.raises(ArchiveMissing) as no_database:
        elsewhere.count(EVERYTHING)
    shown = [str(missing.value), str(not_found.value), str(no_database.value), reader.status(T0).archive, repr(reader)]
    assert all("***" in text and PASSWORD not in text for text in shown), shown
