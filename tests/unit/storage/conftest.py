"""The storage contract suite's fixtures: every test runs once per backend, without a Prefect server.

`backend` is a fresh, empty archive of each backend (dlt's destination tests are the model: a new
backend passes the same tests or it is not done). What a test needs that differs by backend —
reading what was stored, making a transaction fail part-way, building an archive at an older
schema — is a fixture here with one branch per backend; the tests themselves only use the
ArchiveWriter interface and portable SQL.

PostgreSQL runs on one embedded server per session (`postgres_server`, tests/conftest.py: the
integration tests' PostgreSQL archives share it) with a fresh database per test
(`postgres_database`); the reader suite uses the same two fixtures.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pytest

from archiver.prefect.events import Event, Malformed, compact_json, parse_event
from archiver.storage.base import Archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.writer import ArchiveWriter
from tests.servers import PostgresServer
from tests.unit.storage.shapes import T0, event_json

BACKENDS = ["duckdb", "postgresql"]


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The archive URL of a fresh, empty database on the session's server, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Archive]:
    """A fresh archive of each backend, nothing written yet."""
    if request.param == "duckdb":
        yield DuckDBArchive(tmp_path / "archive.duckdb")
    elif request.param == "postgresql":
        yield PostgreSQLArchive(request.getfixturevalue("postgres_database"))
    else:  # pragma: no cover - a name in BACKENDS without a branch here
        raise AssertionError(f"no fixture for backend {request.param}")


def _libpq(url: str) -> str:
    """An archive URL (postgresql+psycopg://…) as psycopg.connect takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def query_postgresql(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a portable query ($1, $2 …) on a PostgreSQL archive, JSON columns as DuckDB gives
    them: compact JSON text (in JSONB's key order)."""
    import psycopg
    from psycopg.types.json import set_json_loads

    with psycopg.connect(_libpq(url)) as conn:
        set_json_loads(lambda data: compact_json(json.loads(data)), conn)
        if not params:
            return conn.execute(sql.encode()).fetchall()  # bytes: psycopg leaves a % alone
        order = [int(n) - 1 for n in re.findall(r"\$(\d+)", sql)]
        psycopg_sql = re.sub(r"\$\d+", "%s", sql.replace("%", "%%"))
        return conn.execute(psycopg_sql, [params[i] for i in order]).fetchall()


@pytest.fixture
def writer(backend: Archive) -> Iterator[ArchiveWriter]:
    """The backend's writer (schema created), closed after the test."""
    opened = backend.writer(timedelta(seconds=5))
    yield opened
    opened.close()


Query = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def stored(backend: Archive) -> Query:
    """Rows of a portable SQL query ($1, $2 … parameters), read straight from the store: what the
    writer really left there, not what it says it did."""
    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if isinstance(backend, DuckDBArchive):
            with duckdb.connect(str(backend.path), read_only=True) as conn:
                return conn.execute(sql, list(params)).fetchall()
        if isinstance(backend, PostgreSQLArchive):
            return query_postgresql(backend.url, sql, *params)
        raise AssertionError(f"no reader for {backend!r}")

    return query


@pytest.fixture
def failing_after_events(backend: Archive, monkeypatch: pytest.MonkeyPatch) -> Callable[[], AbstractContextManager[None]]:
    """Inside it, write_batch fails in the database after its events are inserted and before the
    mark moves: the store itself raises part-way through the transaction."""
    @contextmanager
    def failing() -> Iterator[None]:
        if isinstance(backend, DuckDBArchive):
            from archiver.storage.duckdb import runs

            # Queueing the new events' objects is the statement after the events' INSERT.
            with monkeypatch.context() as patch:
                patch.setattr(runs, "QUEUE_OBJECTS", "INSERT INTO object_refresh_queue SELECT no_such_column")
                yield
            return
        if isinstance(backend, PostgreSQLArchive):
            from archiver.storage.postgresql import runs as postgresql_runs

            # The same statement, taking its two parameters, failing in the server (no such column).
            with monkeypatch.context() as patch:
                patch.setattr(postgresql_runs, "QUEUE_OBJECTS",
                              "INSERT INTO object_refresh_queue SELECT no_such_column FROM (SELECT %s, %s) AS p")
                yield
            return
        raise AssertionError(f"no fault for {backend!r}")

    return failing


@pytest.fixture
def make_event() -> Callable[..., Event]:
    """An Event as parse_event makes it from what /events/filter returns (keyword options: event_id,
    name, flow_run, payload)."""
    def make(occurred: datetime = T0, **options: Any) -> Event:
        item = parse_event(event_json(occurred, **options))
        assert isinstance(item, Event), item
        return item

    return make


@pytest.fixture
def make_malformed() -> Callable[..., Malformed]:
    """A page item that is not an archivable event (its occurred is no time), keeping its id."""
    def make(event_id: uuid.UUID | None = None, note: str = "") -> Malformed:
        raw = event_json(T0, event_id=event_id, payload={"note": note})
        raw["occurred"] = "not a time"
        item = parse_event(json.loads(json.dumps(raw)))
        assert isinstance(item, Malformed), item
        return item

    return make
