"""`copy`: a whole archive into another, DuckDB <-> PostgreSQL, resumable, idempotent, verified, refused
where it would mix two archives, and never showing a password."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from archiver import cli
from archiver.errors import ArchiveBusy, ArchiveError, ArchiveMissing, BadInput
from archiver.prefect.events import Event, parse_event
from archiver.storage import copy as copy_module
from archiver.storage import tables as tables_module
from archiver.storage.base import Archive
from archiver.storage.copy import copy_archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.logs import Artifact, Log, LogMark
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.tables import TABLES
from archiver.storage.writer import RunState, StateFetch, StorageBlock
from tests.unit.storage.conftest import PostgresServer
from tests.unit.storage.shapes import T0, event_json

WAIT = timedelta(seconds=5)
DIRECTIONS = ["duckdb_to_postgresql", "postgresql_to_duckdb"]
PASSWORD = "c0py-s3cret"
RUN = uuid.UUID("0192f0c4-2f6b-7a51-9e4b-3c1f2d0e8a77")
BLOCK = str(uuid.uuid4())


def _archive(kind: str, tmp_path: Path, server: PostgresServer, name: str) -> Archive:
    if kind == "duckdb":
        return DuckDBArchive(tmp_path / f"{name}.duckdb")
    return PostgreSQLArchive(server.url(server.create_database()))


@pytest.fixture(params=DIRECTIONS)
def pair(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer) -> Iterator[tuple[Archive, Archive]]:
    """(source, destination), one of each backend, both empty."""
    first, second = request.param.split("_to_")
    yield _archive(first, tmp_path, postgres_server, "source"), _archive(second, tmp_path, postgres_server, "destination")


def _event(n: int, **options: Any) -> Event:
    item = parse_event(event_json(T0 + timedelta(seconds=n, microseconds=123457), **options))
    assert isinstance(item, Event), item
    return item


def seed(archive: Archive, events: int = 30) -> list[Event]:
    """An archive with a row in every table: awkward values (Unicode, a 300 KB payload, key order
    JSONB would sort, NULLs, microseconds), a quarantined item, a gap, the ledger, run metadata,
    states, a storage block, a run's logs and artifacts with its harvest mark, every cursor."""
    made = [_event(n, flow_run=RUN if n % 5 == 0 else None,
                   payload={"z": n, "a": {"y": "ü漢字🙂\t\"quoted\"", "b": [3, 1.5, None, True]}, "big": 1e20})
            for n in range(events)]
    made.append(_event(events, payload={"blob": "x" * 300_000, "z": None}))
    raw = event_json(T0, payload={"note": "bad"})
    raw["occurred"] = "not a time"
    malformed = parse_event(json.loads(json.dumps(raw)))
    writer = archive.writer(WAIT)
    try:
        ledger = writer.start_run("sync", T0, None)
        writer.write_batch(made, [malformed], mark=T0 + timedelta(hours=1, microseconds=7), ledger_id=ledger)  # type: ignore[list-item]
        writer.record_gap(T0 - timedelta(days=2), T0 - timedelta(days=1), ledger)
        writer.save_objects("flow_runs", [str(RUN)], [{
            "id": str(RUN), "name": "calm-otter", "flow_id": str(uuid.uuid4()), "state_type": "COMPLETED",
            "state": {"timestamp": "2026-11-02T09:30:00.654321Z"}, "run_count": 2, "tags": ["nightly", "ü"],
            "parameters": {"zeta": 1, "alpha": {"b": 2, "a": [1, 2]}}, "work_queue_name": None,
            "created": "2026-11-02T09:29:00.000001Z", "total_run_time": 1.25}], give_up_after=3)
        writer.save_objects("deployments", [], [{"id": str(uuid.uuid4()), "name": "etl/nightly", "paused": False,
                                                  "tags": [], "status": "READY"}], give_up_after=3)
        writer.save_objects("flows", [], [{"id": str(uuid.uuid4()), "name": "etl", "tags": None}], give_up_after=3)
        writer.save_objects("work_pools", [], [{"id": str(uuid.uuid4()), "name": "pool", "type": "process",
                                                 "is_paused": True}], give_up_after=3)
        writer.save_objects("task_runs", [], [{"id": str(uuid.uuid4()), "name": "t-0", "flow_run_id": str(RUN),
                                                "task_key": "t", "run_count": 1}], give_up_after=3)
        state = RunState(
            id=str(made[0].id), run_kind="flow_run", run_id=str(RUN), type="FAILED", name="Failed",
            timestamp=T0 + timedelta(microseconds=1), message="ValueError: ü\nsecond line",
            state_details={"retriable": False, "flow_run_id": str(RUN)}, data_kind="result_reference",
            storage_key="/results/abc", storage_block_id=BLOCK, serializer_type="json",
            result_expiration=T0 + timedelta(days=7, microseconds=999999), result_prefect_version="3.9.1",
            state={"type": "FAILED", "data": {"storage_key": "/results/abc"}, "a": 1}, archived_at=T0)
        writer.save_states([state], [StateFetch("flow_run", str(RUN), T0, 1, T0, T0 + timedelta(seconds=1), 0)])
        writer.save_storage_blocks([StorageBlock(BLOCK, True, "results", "local-file-system", "/srv/results")])
        writer.advance_states_cursor(T0 + timedelta(minutes=3, microseconds=5))
        mark = LogMark("flow_run", str(RUN), T0 + timedelta(seconds=2, microseconds=3), T0, T0 + timedelta(seconds=1), T0)
        writer.save_logs([Log(uuid.uuid4(), RUN, None, 40, "prefect.flow_runs", T0 + timedelta(seconds=2, microseconds=3),
                              "Traceback: ü漢字\nValueError", {"level": 40, "message": "Traceback: ü漢字\nValueError",
                                                               "z": 1, "a": None})], mark)
        writer.save_artifacts([Artifact(uuid.uuid4(), "report", "table", "a table", [{"b": 1, "a": "ü"}], RUN, None,
                                        T0, T0 + timedelta(microseconds=9), {"type": "table", "key": "report"})], mark)
        writer.advance_logs_cursor(T0 + timedelta(minutes=4, microseconds=11))
        writer.finish_run(ledger, {"fetched": len(made) + 1, "inserted": len(made)}, "ok")
    finally:
        writer.close()
    return made


def contents(archive: Archive) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, by key; JSON of tables other than events parsed (JSONB orders keys
    its own way), events' JSON as its exact text."""
    source = archive.table_source(WAIT)
    try:
        found = {}
        for spec in TABLES:
            columns = sorted(source.columns(spec.name) or [], key=lambda c: c.name)
            rows = [row for page in source.pages(spec, columns, None, 1000) for row in page]
            if spec.name != "events":
                json_at = [i for i, c in enumerate(columns) if c.kind in ("json", "jsonb")]
                rows = [tuple(json.loads(v) if i in json_at and v is not None else v for i, v in enumerate(row))
                        for row in rows]
            found[spec.name] = sorted(rows, key=repr)
        return found
    finally:
        source.close()


def answers(archive: Archive, events: list[Event]) -> dict[str, Any]:
    """What `get`, `events`, `states` and `status` answer, as text (byte for byte)."""
    from archiver.prefect.filters import EventFilter

    with archive.reader(WAIT).session() as reader:  # one opening for every read
        status = reader.status(now=T0 + timedelta(days=1)).to_json()
        status.pop("archive")
        page = reader.page(EventFilter(T0 - timedelta(days=1), T0 + timedelta(days=1)), limit=100)
        return {
            "get": [json.dumps(reader.event(e.id)) for e in events],
            "events": json.dumps(page.events), "total": page.total,
            "states": repr(reader.run_history(RUN)), "flow_run": reader.flow_run(RUN),
            "status": status,
        }


def test_a_copy_holds_every_row_and_answers_as_its_source_both_ways(pair: tuple[Archive, Archive],
                                                                    tmp_path: Path, postgres_server: PostgresServer) -> None:
    source, destination = pair
    events = seed(source)
    report = copy_archive(source, destination)
    assert report.ok and not report.resumed, report.to_json()
    assert {t.table: t.source_rows for t in report.tables} == {t.table: t.destination_rows for t in report.tables}
    assert all(t.source_rows for t in report.tables), "seed() leaves no table empty"
    assert contents(destination) == contents(source)
    assert answers(destination, events) == answers(source, events)
    # And back again: the values survive the round trip through the other backend.
    back = _archive("duckdb" if isinstance(source, DuckDBArchive) else "postgresql", tmp_path, postgres_server, "back")
    assert copy_archive(destination, back).ok
    assert contents(back) == contents(source)
    assert answers(back, events) == answers(source, events)


def test_a_finished_copy_run_again_copies_nothing_then_only_what_is_new(pair: tuple[Archive, Archive]) -> None:
    source, destination = pair
    seed(source, events=10)
    first = copy_archive(source, destination)
    again = copy_archive(source, destination)
    assert again.ok and again.resumed and again.copied == 0
    assert [t.destination_rows for t in again.tables] == [t.destination_rows for t in first.tables]
    writer = source.writer(WAIT)
    writer.write_batch([_event(100 + n) for n in range(4)], mark=T0 + timedelta(hours=2))
    writer.close()
    later = copy_archive(source, destination)
    assert later.ok, later.to_json()
    by_table = {t.table: t for t in later.tables}
    assert by_table["events"].copied == 4 and by_table["event_resources"].copied == 12
    assert by_table["events"].destination_rows == by_table["events"].source_rows == 15
    assert destination.reader(WAIT).high_water_mark() == T0 + timedelta(hours=2)


def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    small = tuple(dataclasses.replace(spec, page_rows=4) for spec in TABLES)
    monkeypatch.setattr(tables_module, "TABLES", small)
    monkeypatch.setattr(copy_module, "TABLES", small)


def test_a_copy_failing_between_pages_resumes_where_it_stopped_and_doubles_nothing(
        pair: tuple[Archive, Archive], monkeypatch: pytest.MonkeyPatch) -> None:
    source, destination = pair
    seed(source, events=17)
    _small_pages(monkeypatch)
    from archiver.storage.duckdb.rows import DuckDBSink
    from archiver.storage.postgresql.rows import PostgreSQLSink

    sink = DuckDBSink if isinstance(destination, DuckDBArchive) else PostgreSQLSink
    original = sink.write_page
    calls = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
        calls.append(1)
        if len(calls) == 3:
            raise ArchiveError("the connection went away (injected)")
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(sink, "write_page", failing)
        with pytest.raises(ArchiveError, match="injected"):
            copy_archive(source, destination)
    assert destination.reader(WAIT).status().events == 8  # two pages of four committed
    assert destination.reader(WAIT).high_water_mark() is None  # the mark waits for everything it claims
    if isinstance(destination, DuckDBArchive):  # its lookups by resource id read spans: kept page by page
        import duckdb

        from tests.unit.storage.test_events import SPANS, SPANS_OF_ROWS

        with duckdb.connect(str(destination.path), read_only=True) as conn:
            assert conn.execute(SPANS).fetchall() == conn.execute(SPANS_OF_ROWS).fetchall() != []
    resumed = copy_archive(source, destination)
    assert resumed.ok and resumed.resumed, resumed.to_json()
    by_table = {t.table: t for t in resumed.tables}
    assert by_table["events"].copied == 18 - 8 and by_table["event_resources"].copied == (18 - 8) * 3
    assert contents(destination) == contents(source)


KILLER = """
import os, signal, sys, dataclasses
from archiver.storage import open_archive, copy, tables
from archiver.storage.duckdb.rows import DuckDBSink
from archiver.storage.postgresql.rows import PostgreSQLSink
small = tuple(dataclasses.replace(spec, page_rows=4) for spec in tables.TABLES)
tables.TABLES = copy.TABLES = small
for sink in (DuckDBSink, PostgreSQLSink):
    original = sink.write_page
    def write_page(self, *args, _original=original, **kwargs):
        counts = _original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # right after the first page committed
    sink.write_page = write_page
copy.copy_archive(open_archive(sys.argv[1]), open_archive(sys.argv[2]))
"""


def test_a_copy_sigkilled_after_its_first_page_resumes_with_equal_rows(tmp_path: Path, postgres_database: str) -> None:
    # Into DuckDB, whose file (and write-ahead log) the killed process had open; the injected
    # failure above covers both directions.
    source, destination = PostgreSQLArchive(postgres_database), DuckDBArchive(tmp_path / "copy.duckdb")
    seed(source, events=9)
    killed = subprocess.run([sys.executable, "-c", KILLER, source.url, destination.url], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).parents[3])
    assert killed.returncode == -9, killed.stderr
    assert destination.reader(WAIT).status().events == 4
    resumed = copy_archive(source, destination)
    assert resumed.ok and resumed.resumed
    assert {t.table: t.copied for t in resumed.tables}["events"] == 10 - 4
    assert contents(destination) == contents(source)


def test_copy_refuses_a_destination_holding_another_archive(pair: tuple[Archive, Archive]) -> None:
    source, destination = pair
    seed(source, events=3)
    writer = destination.writer(WAIT)
    writer.write_batch([_event(500)])
    writer.close()
    with pytest.raises(ArchiveError, match="already holds an archive .*not copied from it.*Copy into an empty database"):
        copy_archive(source, destination)
    assert destination.reader(WAIT).status().events == 1


def test_copy_refuses_the_same_archive_a_missing_source_and_a_held_destination(tmp_path: Path) -> None:
    source, destination = DuckDBArchive(tmp_path / "a.duckdb"), DuckDBArchive(tmp_path / "b.duckdb")
    with pytest.raises(ArchiveMissing):
        copy_archive(source, destination)
    seed(source, events=2)
    with pytest.raises(BadInput, match="same archive"):
        copy_archive(source, DuckDBArchive(tmp_path / "." / "a.duckdb"))
    with destination.writer_lock(), pytest.raises(ArchiveBusy, match="another prefect-archiver process"):
        copy_archive(source, destination)
    assert copy_archive(source, destination).ok


def test_the_cli_never_shows_a_password_and_names_a_table_that_differs(
        tmp_path: Path, postgres_database: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHIVER_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    source = DuckDBArchive(tmp_path / "source.duckdb")
    seed(source, events=5)
    secret_url = postgres_database.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{PASSWORD}@")
    assert cli.main(["copy", "--db", str(source.path), "--to", secret_url, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["ok"] and summary["copied"] > 0 and "***" in summary["destination"]
    assert {t["table"] for t in summary["tables"]} == {spec.name for spec in TABLES}
    assert set(summary["tables"][0]) == {"table", "source_rows", "destination_rows", "copied", "missing", "extra", "same"}
    assert cli.main(["copy", "--db", str(source.path), "--to", secret_url]) == 0
    out, err = capsys.readouterr()
    assert "nothing new to copy" in out
    # Back the other way, from the PostgreSQL archive named with its password: the copy records where
    # it came from without it.
    back = tmp_path / "back.duckdb"
    assert cli.main(["copy", "--url", secret_url, "--to", str(back)]) == 0
    import duckdb

    with duckdb.connect(str(back), read_only=True) as conn:
        recorded = conn.execute("SELECT DISTINCT source FROM copy_progress").fetchall()
    assert len(recorded) == 1 and recorded[0][0].startswith("postgresql://") and PASSWORD not in recorded[0][0]
    # A row only the destination has (a sync there since): the copy differs, exit 1, the tables named.
    writer = PostgreSQLArchive(secret_url).writer(WAIT)
    writer.write_batch([_event(900)])
    writer.close()
    other = DuckDBArchive(tmp_path / "other.duckdb")
    seed(other, events=1)
    assert cli.main(["copy", "--db", str(source.path), "--to", secret_url]) == 1
    out, err = capsys.readouterr()
    assert "differs from its source in events, event_resources" in err and "1 only in the destination" in err
    assert cli.main(["copy", "--db", str(other.path), "--to", secret_url]) == 1  # refused: another archive
    out2, err2 = capsys.readouterr()
    assert "already holds an archive (copied from duckdb:///" in err2
    for text in (out, err, out2, err2, json.dumps(summary)):
        assert PASSWORD not in text
    assert cli.main(["copy", "--db", str(source.path), "--to", "ftp://nowhere/x"]) == 2
    assert "names no backend" in capsys.readouterr().err


def test_a_postgresql_source_written_during_the_copy_is_copied_as_it_was_when_the_copy_began(
        tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source, destination = PostgreSQLArchive(postgres_database), DuckDBArchive(tmp_path / "copy.duckdb")
    seed(source, events=9)
    _small_pages(monkeypatch)
    from archiver.storage.duckdb.rows import DuckDBSink

    original = DuckDBSink.write_page
    late = [_event(700 + n) for n in range(3)]

    def write_then_sync_the_source(self: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
        if late:  # a `run` on the source commits between two of the copy's pages
            writer = source.writer(WAIT)
            writer.write_batch(late, mark=T0 + timedelta(hours=5))
            writer.close()
            late.clear()
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(DuckDBSink, "write_page", write_then_sync_the_source)
        during = copy_archive(source, destination)
    assert during.ok and {t.table: t.destination_rows for t in during.tables}["events"] == 10
    assert destination.reader(WAIT).high_water_mark() == T0 + timedelta(hours=1, microseconds=7)  # the snapshot's
    after = copy_archive(source, destination)
    assert after.ok and {t.table: t.copied for t in after.tables}["events"] == 3
    assert destination.reader(WAIT).high_water_mark() == T0 + timedelta(hours=5)


def test_events_offered_again_to_a_duckdb_destination_are_stored_once(tmp_path: Path) -> None:
    """A DuckDB archive's events have no primary key (migration 0010): the sink skips ids it holds."""
    from archiver.storage.duckdb.rows import open_sink, open_source
    from archiver.storage.rows import Progress

    source, destination = DuckDBArchive(tmp_path / "source.duckdb"), DuckDBArchive(tmp_path / "destination.duckdb")
    seed(source, events=6)
    destination.writer(WAIT).close()
    spec = next(s for s in TABLES if s.name == "events")
    reading = open_source(source.path, WAIT)
    try:
        columns = reading.columns("events") or []
        rows = [row for page in reading.pages(spec, columns, None, 100) for row in page]
    finally:
        reading.close()
    sink = open_sink(destination.path, WAIT)
    try:
        progress = Progress("events", None, 0, False)
        assert sink.write_page("test", spec, columns, rows[:4], [], progress) == {"events": 4}
        assert sink.write_page("test", spec, columns, rows[2:], [], progress) == {"events": len(rows) - 4}
        assert sink.write_page("test", spec, columns, rows, [], progress) == {"events": 0}
        assert sink.count("events") == len(rows)
    finally:
        sink.close()
