"""The reader side of the storage contract: what every backend's ArchiveReader answers, no server needed.

Parametrized by backend (dlt's destination tests are the model): a new backend passes these or it
is not done. Archives are filled through the backend's writer with Prefect-shaped events parsed by
archiver.prefect.events, as a sync fills them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from archiver.errors import ArchiveError, ArchiveMissing, BadInput, QueryTimeout, RunNotFound
from archiver.prefect.events import Event, Malformed, format_timestamp, parse_event
from archiver.prefect.filters import EventFilter, RelatedMatch, ResourceMatch
from archiver.storage import Archive, open_archive
from archiver.storage.reader import ArchiveReader, ArchiveStatus
from archiver.storage.writer import ORPHANED_RUN_ERROR

UTC = timezone.utc
TIMEOUT = timedelta(seconds=5)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERYTHING = EventFilter(datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


@dataclass
class Backend:
    """One backend as the suite drives it: a fresh archive, and one at an older schema."""

    name: str
    archive: Archive
    at_schema: Callable[[int], Archive]  # a new archive with only the migrations up to this version

    def reader(self) -> ArchiveReader:
        return self.archive.reader(TIMEOUT)

    def write(self, events: list[Event], malformed: list[Malformed] | None = None, mark: datetime | None = None) -> None:
        self.archive.writer(TIMEOUT).write_batch(events, malformed or [], mark=mark)


def duckdb_at_schema(path: Path) -> Callable[[int], Archive]:
    """A DuckDB file migrated only up to `version`, as an older prefect-archiver left it."""

    def build(version: int) -> Archive:
        import duckdb

        from archiver.storage.duckdb.migrate import BOOTSTRAP, available

        conn = duckdb.connect(str(path))
        try:
            conn.execute(BOOTSTRAP)
            for migration in available():
                if migration.version <= version:
                    conn.execute(migration.sql)
                    conn.execute("INSERT INTO schema_migrations VALUES ($1, $2, now())", [migration.version, migration.name])
        finally:
            conn.close()
        return open_archive(f"duckdb:///{path}")

    return build


@pytest.fixture(params=["duckdb", "postgresql"])
def reader_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "duckdb":
        archive = open_archive(f"duckdb:///{tmp_path / 'archive.duckdb'}")
        yield Backend("duckdb", archive, duckdb_at_schema(tmp_path / "old.duckdb"))
    elif request.param == "postgresql":
        yield Backend("postgresql", open_archive(request.getfixturevalue("postgres_database")), no_older_schema)
    else:  # pragma: no cover - a name in params without a branch here
        raise AssertionError(f"no fixture for backend {request.param}")


def no_older_schema(version: int) -> Archive:
    """PostgreSQL archives begin at schema 1, which is DuckDB's 6: no older one exists to read."""
    raise AssertionError(f"no PostgreSQL archive was ever written at schema {version}")


@pytest.fixture(params=["duckdb"])
def older_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The backends whose archives exist at older schemas (PostgreSQL's begin at today's)."""
    archive = open_archive(f"duckdb:///{tmp_path / 'archive.duckdb'}")
    yield Backend("duckdb", archive, duckdb_at_schema(tmp_path / "old.duckdb"))


def raw_event(
    occurred: datetime, name: str = "acme.order.placed", resource: str = "acme.order.1",
    related: list[dict[str, str]] | None = None, event_id: uuid.UUID | None = None, **resource_labels: str,
) -> dict[str, Any]:
    """An event as Prefect's API returns it (the shape `get` prints)."""
    return {
        "occurred": format_timestamp(occurred),
        "event": name,
        "resource": {"prefect.resource.id": resource, **resource_labels},
        "related": related or [],
        "payload": {"note": "naïve café ☕", "n": 1},
        "id": str(event_id or uuid.uuid4()),
        "follows": None,
        "received": format_timestamp(occurred + timedelta(seconds=1)),
    }


def event(raw: dict[str, Any]) -> Event:
    parsed = parse_event(raw)
    assert isinstance(parsed, Event), parsed
    return parsed


def related(resource: str, role: str) -> dict[str, str]:
    return {"prefect.resource.id": resource, "prefect.resource.role": role}


def key(api_event: dict[str, Any]) -> tuple[str, str]:
    return api_event["occurred"], api_event["id"]


# -- by id ---------------------------------------------------------------------------------------------


def test_an_event_read_by_id_is_the_api_shape_it_was_archived_from(reader_backend: Backend) -> None:
    first = raw_event(T0, related=[related("prefect.flow-run.1", "flow-run")])
    first["follows"] = str(uuid.uuid4())
    unicode = raw_event(T0 + timedelta(microseconds=5), name="acme.日本", resource="acme.ünï")
    reader_backend.write([event(first), event(unicode)])
    reader = reader_backend.reader()
    assert reader.event(uuid.UUID(first["id"])) == first
    assert reader.event(uuid.UUID(unicode["id"])) == unicode
    assert reader.event(uuid.uuid4()) is None


def test_an_event_read_by_id_is_the_json_text_it_was_archived_from_byte_for_byte(reader_backend: Backend) -> None:
    # Keys in the server's order (not sorted, not by length) and numbers as the server wrote them:
    # what `get` and serve answer must be what Prefect answered.
    raw = raw_event(T0, resource="acme.order.7", zeta="z", a="a")
    raw["payload"] = {"note": "x", "n": 1, "big": 1e20, "small": 1.5e-07, "ratio": 0.1, "nested": {"z": [1.0, 2], "a": None}}
    reader_backend.write([event(raw)])
    read = reader_backend.reader().event(uuid.UUID(raw["id"]))
    assert json.dumps(read, ensure_ascii=False) == json.dumps(raw, ensure_ascii=False)


# -- searches and keyset pages -------------------------------------------------------------------------


def test_a_search_matches_names_prefixes_resources_and_roles_as_prefect_does(reader_backend: Backend) -> None:
    run = "prefect.flow-run.9"
    placed = raw_event(T0, related=[related(run, "flow-run")])
    shipped = raw_event(T0 + timedelta(seconds=1), name="acme.order.shipped", resource=run)
    other = raw_event(T0 + timedelta(seconds=2), name="acme.invoice.sent", related=[related(run, "tag")])
    reader_backend.write([event(e) for e in (placed, shipped, other)])
    reader = reader_backend.reader()

    def ids(search: EventFilter) -> set[str]:
        page = reader.page(search, 10)
        assert page.total == reader.count(search) == len(page.events)
        return {e["id"] for e in page.events}

    since, until = T0, T0 + timedelta(seconds=2)
    assert ids(EventFilter(since, until, names=("acme.order.shipped",))) == {shipped["id"]}
    assert ids(EventFilter(since, until, prefixes=("acme.order.",))) == {placed["id"], shipped["id"]}
    assert ids(EventFilter(since, until, exclude_prefixes=("acme.order.",))) == {other["id"]}
    everywhere = {e["id"] for e in (placed, shipped, other)}
    assert ids(EventFilter(since, until, any_resource=(ResourceMatch(ids=(run,)),))) == everywhere
    # A related filter never matches the event's own resource, and a role narrows it.
    assert ids(EventFilter(since, until, related=(RelatedMatch(ids=(run,)),))) == {placed["id"], other["id"]}
    assert ids(EventFilter(since, until, related=(RelatedMatch(ids=(run,), roles=("flow-run",)),))) == {placed["id"]}
    # Both ends of `occurred` are inclusive.
    assert ids(EventFilter(T0 + timedelta(seconds=1), T0 + timedelta(seconds=1))) == {shipped["id"]}
    assert reader.count(EventFilter(T0 - timedelta(days=1), T0 - timedelta(microseconds=1))) == 0


def test_searches_by_resource_id_find_the_events_of_each_resources_span_and_no_others(reader_backend: Backend) -> None:
    """DuckDB reads a resource's rows between its first and last event (resource_spans): filters that
    pin ids, alone and together, find exactly what they would with no such bounds."""
    run_a, run_b, flow, tag = "prefect.flow-run.a", "prefect.flow-run.b", "prefect.flow.f", "prefect.tag.x"
    first = raw_event(T0, resource=run_a, related=[related(flow, "flow")])
    second = raw_event(T0 + timedelta(hours=1), resource=run_b, related=[related(flow, "flow")])
    third = raw_event(T0 + timedelta(hours=2), resource=run_a, related=[related(tag, "tag")])
    reader_backend.write([event(e) for e in (first, second, third)])
    reader = reader_backend.reader()

    def ids(**parts: Any) -> set[str]:
        search = EventFilter(T0 - timedelta(days=1), T0 + timedelta(days=1), **parts)
        page = reader.page(search, 10)
        assert page.total == reader.count(search) == len(page.events)
        return {e["id"] for e in page.events}

    assert ids(any_resource=(ResourceMatch(ids=(run_a,)),)) == {first["id"], third["id"]}
    assert ids(any_resource=(ResourceMatch(ids=(run_a, run_b)),)) == {first["id"], second["id"], third["id"]}
    assert ids(any_resource=(ResourceMatch(ids=(run_a,)),), related=(RelatedMatch(ids=(flow,)),)) == {first["id"]}
    assert ids(related=(RelatedMatch(resources_in_roles=((flow, "flow"),)),)) == {first["id"], second["id"]}
    assert ids(related=(RelatedMatch(labels={"prefect.resource.id": (tag,)}),)) == {third["id"]}
    assert ids(related=(RelatedMatch(labels={"prefect.resource.id": ("prefect.tag.*",)}),)) == {third["id"]}
    assert ids(any_resource=(ResourceMatch(ids=(run_b,)), ResourceMatch(ids=(tag,)))) == set()  # spans apart
    assert ids(any_resource=(ResourceMatch(ids=("prefect.flow-run.unknown",)),)) == set()


@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_keyset_pages_order_ties_on_occurred_by_id_and_neither_skip_nor_repeat(reader_backend: Backend, order: str) -> None:
    # Three instants, four events each: every page boundary falls inside a tie.
    raws = [raw_event(T0 + timedelta(seconds=i // 4)) for i in range(12)]
    reader_backend.write([event(e) for e in raws])
    reader = reader_backend.reader()
    search = EventFilter(T0, T0 + timedelta(minutes=1), order=order)
    seen: list[dict[str, Any]] = []
    page = reader.page(search, 5)
    total = page.total
    while True:
        seen += page.events
        assert page.total == total == 12
        if page.after is None:
            break
        assert (page.after[0], str(page.after[1])) == (datetime.fromisoformat(seen[-1]["occurred"]), seen[-1]["id"])
        page = reader.page(search, 5, after=page.after, total=total)
    expected = sorted(raws, key=lambda e: (datetime.fromisoformat(e["occurred"]), uuid.UUID(e["id"])),
                      reverse=order == "DESC")
    assert [e["id"] for e in seen] == [e["id"] for e in expected]


@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_pages_of_one_resources_events_neither_skip_nor_repeat_an_event_naming_it_twice(
    reader_backend: Backend, order: str,
) -> None:
    run = "prefect.flow-run.7"
    # Ties on occurred, events naming the run in two roles, its own events, and others' events.
    raws = [raw_event(T0 + timedelta(seconds=i // 3), related=[related(run, "flow-run")] + (
        [related(run, "parent")] if i % 4 == 0 else [])) for i in range(10)]
    raws += [raw_event(T0 + timedelta(seconds=1), resource=run), raw_event(T0, related=[related("acme.other", "x")])]
    reader_backend.write([event(e) for e in raws])
    reader = reader_backend.reader()
    for search, wanted in [
        (EventFilter(T0, T0 + timedelta(minutes=1), order=order, related=(RelatedMatch(ids=(run,)),)), raws[:10]),
        (EventFilter(T0, T0 + timedelta(minutes=1), order=order, any_resource=(ResourceMatch(ids=(run,)),)), raws[:11]),
    ]:
        seen: list[str] = []
        page = reader.page(search, 4)
        while True:
            seen += [e["id"] for e in page.events]
            assert page.total == len(wanted)
            if page.after is None:
                break
            page = reader.page(search, 4, after=page.after, total=page.total)
        expected = sorted(wanted, key=lambda e: (datetime.fromisoformat(e["occurred"]), uuid.UUID(e["id"])),
                          reverse=order == "DESC")
        assert seen == [e["id"] for e in expected]


def test_a_page_boundary_holds_while_events_are_written_between_pages(reader_backend: Backend) -> None:
    raws = [raw_event(T0 + timedelta(seconds=i)) for i in range(6)]
    reader_backend.write([event(e) for e in raws])
    reader = reader_backend.reader()
    search = EventFilter(T0, T0 + timedelta(minutes=1), order="ASC")
    first = reader.page(search, 3)
    assert first.after is not None and [e["id"] for e in first.events] == [e["id"] for e in raws[:3]]
    # A sync commits meanwhile: one event before the boundary (a late arrival), one at its instant, one after.
    boundary = T0 + timedelta(seconds=2)
    late = raw_event(T0 + timedelta(microseconds=1))
    tied = raw_event(boundary)
    ahead = raw_event(boundary + timedelta(microseconds=1))
    reader_backend.write([event(e) for e in (late, tied, ahead)])
    second = reader.page(search, 100, after=first.after, total=first.total)
    assert second.total == first.total  # carried, as a page token carries it
    returned = [e["id"] for e in second.events]
    assert not set(returned) & {e["id"] for e in first.events}  # nothing repeated
    assert late["id"] not in returned  # behind the boundary: the next search finds it
    # Everything after the boundary, tie included only when its id sorts after the last one returned.
    after_tie = uuid.UUID(tied["id"]) > first.after[1]
    expected = ([tied["id"]] if after_tie else []) + [ahead["id"]] + [e["id"] for e in raws[3:]]
    assert returned == expected
    assert second.after is None


def test_a_limit_of_zero_counts_without_returning_events(reader_backend: Backend) -> None:
    reader_backend.write([event(raw_event(T0 + timedelta(seconds=i))) for i in range(3)])
    page = reader_backend.reader().page(EVERYTHING, 0)
    assert (page.events, page.total, page.after) == ([], 3, None)


# -- status --------------------------------------------------------------------------------------------


def test_the_status_of_a_new_archive_says_nothing_is_archived_yet(reader_backend: Backend) -> None:
    reader_backend.archive.writer(TIMEOUT)  # creates the schema, as a first sync does
    status = reader_backend.reader().status(T0)
    assert status == ArchiveStatus(reader_backend.archive.name, 0, None, None, None, None, (), 0, 0)
    assert reader_backend.reader().high_water_mark() is None


def test_the_status_counts_events_and_says_the_mark_lag_last_sync_gaps_and_quarantine(reader_backend: Backend) -> None:
    writer = reader_backend.archive.writer(TIMEOUT)
    ledger_id = writer.start_run("sync", None, None)
    real = raw_event(T0)
    broken = Malformed('{"id": "x"}', "missing occurred", real["id"])
    other = Malformed('{"id": "y"}', "missing occurred", None)
    writer.write_batch([], [broken, other], mark=None, ledger_id=ledger_id)
    mark = T0 + timedelta(minutes=5)
    writer.write_batch([event(real), event(raw_event(T0 + timedelta(seconds=1)))], [], mark=mark, ledger_id=ledger_id)
    writer.record_gap(T0 - timedelta(days=2), T0 - timedelta(days=1), ledger_id)
    writer.finish_run(ledger_id, {"fetched": 4, "inserted": 2}, "ok")
    now = mark + timedelta(seconds=90, milliseconds=460)

    status = reader_backend.reader().status(now)
    assert (status.events, status.high_water_mark, status.lag, status.lag_seconds) == (2, mark, now - mark, 90.5)
    assert status.last_sync is not None and status.last_sync.id == ledger_id
    last = status.last_sync
    assert (last.outcome, last.error, last.inserted, last.fetched) == ("ok", None, 2, 4)
    assert status.last_sync.finished is not None and status.last_success == status.last_sync.finished
    assert status.gaps == ((T0 - timedelta(days=2), T0 - timedelta(days=1)),)
    # The item whose real event arrived later is resolved; the other is still quarantined.
    assert (status.quarantined, status.quarantine_resolved) == (1, 1)
    assert reader_backend.reader().high_water_mark() == mark
    # `status --json`'s shape, key for key.
    document = status.to_json()
    assert list(document) == ["archive", "events", "high_water_mark", "lag_seconds", "last_sync", "last_success", "gaps",
                              "quarantined", "quarantine_resolved"]
    assert document["high_water_mark"] == format_timestamp(mark) and document["lag_seconds"] == 90.5
    assert list(document["last_sync"]) == ["id", "started", "finished", "outcome", "error", "inserted", "fetched"]
    assert document["last_sync"]["id"] == str(ledger_id)
    gap = {"since": format_timestamp(T0 - timedelta(days=2)), "until": format_timestamp(T0 - timedelta(days=1))}
    assert document["gaps"] == [gap]


def test_a_sync_left_running_without_its_writer_lock_is_reported_interrupted(reader_backend: Backend) -> None:
    writer = reader_backend.archive.writer(TIMEOUT)
    writer.start_run("sync", None, None)
    with reader_backend.archive.writer_lock(holder="sync"):
        running = reader_backend.reader().status()
    assert running.last_sync is not None and (running.last_sync.outcome, running.last_sync.error) == ("running", None)
    died = reader_backend.reader().status()  # the lock is free: its process is gone
    assert died.last_sync is not None and (died.last_sync.outcome, died.last_sync.error) == ("interrupted", ORPHANED_RUN_ERROR)
    assert died.last_success is None


# -- the questions verify asks, as the writer answers them ---------------------------------------------


def test_bucket_counts_newest_before_and_gaps_answer_as_the_writer_does(reader_backend: Backend) -> None:
    raws = [raw_event(T0 + timedelta(minutes=m, seconds=s)) for m in (0, 1, 1, 59, 61) for s in (0,)]
    raws.append(raw_event(T0 + timedelta(minutes=1, seconds=30)))
    writer = reader_backend.archive.writer(TIMEOUT)
    writer.write_batch([event(e) for e in raws], [])
    writer.record_gap(T0 - timedelta(days=1), T0 - timedelta(hours=1), uuid.uuid4())
    reader = reader_backend.reader()
    since, until = T0 - timedelta(hours=1), T0 + timedelta(hours=2)
    for width in (timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)):
        assert reader.bucket_counts(since, until, width) == writer.bucket_counts(since, until, width)
    assert reader.bucket_counts(since, until, timedelta(minutes=1))[T0 + timedelta(minutes=1)] == 3
    assert sum(reader.bucket_counts(since, until, timedelta(hours=1)).values()) == len(raws)
    for moment in (T0, T0 + timedelta(minutes=1), T0 + timedelta(hours=3)):
        assert reader.newest_occurred_before(moment) == writer.newest_occurred_before(moment)
    assert reader.newest_occurred_before(T0) is None
    assert reader.newest_occurred_before(T0 + timedelta(minutes=59)) == T0 + timedelta(minutes=1, seconds=30)
    assert reader.gaps() == writer.gaps() == [(T0 - timedelta(days=1), T0 - timedelta(hours=1))]


# -- runs ----------------------------------------------------------------------------------------------


def state_event(run: uuid.UUID, state: str, at: datetime, kind: str = "flow-run") -> dict[str, Any]:
    return raw_event(at, name=f"prefect.{kind}.{state.title()}", resource=f"prefect.{kind}.{run}",
                     **{"prefect.state-type": state, "prefect.state-name": state.title(),
                        "prefect.state-timestamp": format_timestamp(at)})


def test_a_run_history_lists_its_states_oldest_first_and_names_the_run(reader_backend: Backend) -> None:
    run, task = uuid.uuid4(), uuid.uuid4()
    states = [state_event(run, s, T0 + timedelta(seconds=i)) for i, s in enumerate(["PENDING", "RUNNING", "COMPLETED"])]
    reader_backend.write([event(e) for e in reversed(states)] + [event(state_event(task, "RUNNING", T0, "task-run"))],
                         mark=T0 + timedelta(minutes=1))
    flow_run = {"id": str(run), "name": "brave-otter", "state_type": "COMPLETED", "created_by": None}
    reader_backend.archive.writer(TIMEOUT).save_objects("flow_runs", [str(run)], [flow_run], 3)
    reader = reader_backend.reader()

    history = reader.run_history(run)
    assert (history.run_kind, history.run_id, history.run_name) == ("flow_run", str(run), "brave-otter")
    assert [s.type for s in history.states] == ["PENDING", "RUNNING", "COMPLETED"]
    assert [s.id for s in history.states] == [e["id"] for e in states]
    assert all(s.source == "event" and s.data_kind == "unknown" and s.result is None for s in history.states)
    assert history.final is not None and history.final.timestamp == T0 + timedelta(seconds=2)
    assert history.archived_until == T0 + timedelta(minutes=1)
    assert reader.run_history(task).run_kind == "task_run"
    assert reader.flow_run(run) == flow_run
    assert reader.flow_run(task) is None


def test_a_run_the_archive_does_not_know_is_run_not_found_naming_the_mark(reader_backend: Backend) -> None:
    reader_backend.write([event(raw_event(T0))], mark=T0 + timedelta(minutes=1))
    missing = uuid.uuid4()
    mark = format_timestamp(T0 + timedelta(minutes=1))
    with pytest.raises(RunNotFound, match=f"no flow run or task run with id {missing} .*high-water mark {mark}"):
        reader_backend.reader().run_history(missing)


# -- the SQL console -----------------------------------------------------------------------------------


def test_sql_answers_a_query_with_its_columns_and_what_a_printer_needs(reader_backend: Backend) -> None:
    reader_backend.write([event(raw_event(T0))])
    with reader_backend.reader().sql("SELECT id, resource, 2 AS two, event FROM events") as result:
        assert result.columns == ["id", "resource", "two", "event"]
        assert result.json == [False, True, False, False]
        assert result.numeric == [False, False, True, False]
        rows = list(result.rows)
    assert len(rows) == 1 and rows[0][2] == 2


# What each backend's console must refuse: writes, files and programs outside the archive, settings.
REFUSED = {
    "duckdb": [
        "DELETE FROM events",
        "CREATE TABLE mine (x INTEGER)",
        "COPY events TO '{dir}/out.csv'",
        "SELECT * FROM read_csv('{dir}/secret.csv')",
        "ATTACH '{dir}/archive.duckdb' AS again (READ_WRITE)",
        "ATTACH '{dir}/other.duckdb' AS other",
        "SET enable_external_access = true",
    ],
    "postgresql": [
        "DELETE FROM events",
        "CREATE TABLE mine (x INTEGER)",
        "WITH gone AS (DELETE FROM events RETURNING id) SELECT * FROM gone",
        "COPY events TO '{dir}/out.csv'",
        "COPY events TO PROGRAM 'touch {dir}/out.csv'",
        "COPY events FROM '{dir}/secret.csv'",
        "SELECT pg_read_file('{dir}/secret.csv')",
        "SELECT * FROM pg_ls_dir('{dir}')",
        "SELECT lo_export(lo_import('{dir}/secret.csv'), '{dir}/out.csv')",
        "/* a comment first */ SET default_transaction_read_only = off",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT \"pg_catalog\".\"set_config\"('statement_timeout', '0', false)",
        "SELECT query_to_xml('SELECT pg_read_file(''{dir}/secret.csv'')', true, true, '')",
    ],
}


def test_sql_refuses_writes_other_files_and_changed_settings(reader_backend: Backend, tmp_path: Path) -> None:
    reader_backend.write([event(raw_event(T0))])
    (tmp_path / "secret.csv").write_text("a\n1\n")
    for query in REFUSED[reader_backend.name]:
        with pytest.raises(BadInput, match="refused|failed"):
            with reader_backend.reader().sql(query.format(dir=tmp_path)) as result:
                list(result.rows)
        assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists(), query
    assert reader_backend.reader().count(EVERYTHING) == 1


# -- archives that are not there, or older ----------------------------------------------------------------


READS: dict[str, Callable[[ArchiveReader], object]] = {
    "event": lambda r: r.event(uuid.uuid4()),
    "page": lambda r: r.page(EVERYTHING, 10),
    "count": lambda r: r.count(EVERYTHING),
    "status": lambda r: r.status(),
    "high_water_mark": lambda r: r.high_water_mark(),
    "flow_run": lambda r: r.flow_run(uuid.uuid4()),
    "run_history": lambda r: r.run_history(uuid.uuid4()),
    "bucket_counts": lambda r: r.bucket_counts(T0, T0 + timedelta(days=1), timedelta(hours=1)),
    "newest_occurred_before": lambda r: r.newest_occurred_before(T0),
    "gaps": lambda r: r.gaps(),
    "sql": lambda r: r.sql("SELECT 1").__enter__(),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_every_read_of_a_missing_archive_is_archive_missing_and_creates_nothing(
    reader_backend: Backend, read: Callable[[ArchiveReader], object],
) -> None:
    with pytest.raises(ArchiveMissing):
        read(reader_backend.reader())
    assert not reader_backend.archive.exists()


def test_an_archive_from_before_run_states_says_to_sync_once_to_upgrade(older_backend: Backend) -> None:
    old = older_backend.at_schema(4).reader(TIMEOUT)
    with pytest.raises(ArchiveError, match=r"run `prefect-archiver sync` once to upgrade"):
        old.run_history(uuid.uuid4())
    with pytest.raises(BadInput, match=r"schema is version 4 .*run `prefect-archiver sync` once to upgrade"):
        with old.sql("SELECT * FROM run_states"):
            pass
    # What the old schema holds is still read.
    assert old.status().events == 0 and old.flow_run(uuid.uuid4()) is None


def test_an_archive_from_before_quarantine_resolution_reads_its_status(older_backend: Backend) -> None:
    status = older_backend.at_schema(5).reader(TIMEOUT).status()
    assert (status.quarantined, status.quarantine_resolved) == (0, 0)


def test_an_archive_from_before_run_metadata_has_no_flow_runs(older_backend: Backend) -> None:
    assert older_backend.at_schema(1).reader(TIMEOUT).flow_run(uuid.uuid4()) is None


# -- reading while another process writes -------------------------------------------------------------

BATCHES, PER_BATCH = 25, 80
# Batch k holds the events that occurred at T0 + i ms for i in [k·PER_BATCH, (k+1)·PER_BATCH) and
# carries the mark T0 + (k+1)·PER_BATCH ms: after it, exactly (k+1)·PER_BATCH events lie below the mark.
WRITER_SCRIPT = """
import sys, uuid
from datetime import datetime, timedelta, timezone
from archiver.prefect.events import format_timestamp, parse_event
from archiver.storage import open_archive
url, batches, per_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = datetime.fromisoformat(sys.argv[4])
writer = open_archive(url).writer(timedelta(seconds=60))
for k in range(batches):
    raws = [{"occurred": format_timestamp(t0 + timedelta(milliseconds=i)), "event": "acme.tick",
             "resource": {"prefect.resource.id": "acme.clock"}, "related": [], "payload": {}, "id": str(uuid.uuid4())}
            for i in range(k * per_batch, (k + 1) * per_batch)]
    writer.write_batch([parse_event(r) for r in raws], [], mark=t0 + timedelta(milliseconds=(k + 1) * per_batch))
"""


def test_a_reader_sees_whole_batches_with_their_mark_while_another_process_writes(reader_backend: Backend) -> None:
    reader_backend.archive.writer(TIMEOUT)  # the schema, so the first reads find tables
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, reader_backend.archive.url, str(BATCHES),
                               str(PER_BATCH), T0.isoformat()])
    reader, seen = reader_backend.reader(), set()
    try:
        while writer.poll() is None or not seen or max(seen) < BATCHES * PER_BATCH:
            with reader.session() as session:  # one snapshot: the mark and the events below it
                mark = session.high_water_mark()
                below = session.count(EventFilter(T0, mark - timedelta(microseconds=1))) if mark else 0
                total = session.count(EVERYTHING)
            # Every event below the mark is there, and no event of a batch is there without its mark.
            assert below == total == (round((mark - T0) / timedelta(milliseconds=1)) if mark else 0)
            assert total % PER_BATCH == 0
            seen.add(total)
            if writer.poll() not in (None, 0):
                break
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert max(seen) == BATCHES * PER_BATCH and len(seen) > 2  # the reads landed between commits


# -- sessions ------------------------------------------------------------------------------------------


def test_a_session_answers_several_reads_like_separate_calls(reader_backend: Backend) -> None:
    raws = [raw_event(T0 + timedelta(seconds=i)) for i in range(3)]
    reader_backend.write([event(e) for e in raws], mark=T0 + timedelta(minutes=1))
    reader = reader_backend.reader()
    with reader.session() as session:
        assert session.event(uuid.UUID(raws[0]["id"])) == raws[0]
        assert session.page(EVERYTHING, 2).total == session.count(EVERYTHING) == 3
        assert session.high_water_mark() == reader.high_water_mark()
        assert session.status(T0).events == 3
    # Let go afterwards: the writer commits again.
    reader_backend.write([event(raw_event(T0 + timedelta(seconds=9)))])
    assert reader.count(EVERYTHING) == 4


def test_a_read_past_the_session_time_limit_is_stopped_with_query_timeout(reader_backend: Backend) -> None:
    reader_backend.write([event(raw_event(T0 + timedelta(milliseconds=i), team=f"team-{i}")) for i in range(3000)])
    # A filter on a label pattern reads every event's JSON: slow enough to be interrupted.
    slow = EventFilter(T0, T0 + timedelta(days=1), any_resource=tuple(
        ResourceMatch(labels={"team": (f"*{i}?9*",)}) for i in range(20)))
    with pytest.raises(QueryTimeout, match="took longer than"):
        with reader_backend.reader().session(timedelta(milliseconds=1)) as session:
            for _ in range(200):  # each read may end before the first interrupt lands
                session.count(slow)
