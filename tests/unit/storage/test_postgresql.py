"""The PostgreSQL archive handle: its name, its writer lock, its migrations under concurrency, its errors.

What every backend answers alike is in the contract suite (the `backend` fixture); this is what only
a PostgreSQL archive has: a URL with a password, a server to reach, an advisory lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import duckdb
import pytest

from archiver.errors import ArchiveBusy, ArchiveError, ConfigError
from archiver.prefect.events import format_timestamp, parse_event
from archiver.storage import open_archive
from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.postgresql.connect import create_engine
from archiver.storage.postgresql.migrate import available, migrate
from tests.unit.storage.conftest import query_postgresql
from tests.unit.storage.shapes import T0, event_json

PASSWORD = "s3cret-pw"


def with_password(url: str) -> str:
    """The same archive URL with a password (the test server trusts its socket, so any works)."""
    return url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{PASSWORD}@", 1)


@pytest.fixture
def archive(postgres_database: str) -> PostgreSQLArchive:
    opened = open_archive(with_password(postgres_database))
    assert isinstance(opened, PostgreSQLArchive)
    return opened


def test_the_password_appears_in_no_name_repr_or_heartbeat_path(archive):
    for text in (archive.name, repr(archive), str(archive.heartbeat_path)):
        assert PASSWORD not in text
    assert "***" in archive.name
    assert archive.heartbeat_path.name.endswith(".service.json") and "archive_" in archive.heartbeat_path.name


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres:{pw}@127.0.0.1:1/archive",  # nothing listens there
    "postgresql+psycopg://nobody:{pw}@/postgres?host={socket}",  # no such role
])
def test_connection_errors_say_what_to_check_without_the_password(postgres_server, url):
    with pytest.raises(ArchiveError) as refused:
        open_archive(url.format(pw=PASSWORD, socket=postgres_server.socket_dir)).exists()
    assert PASSWORD not in str(refused.value)
    assert "check the" in str(refused.value)


def test_a_database_that_does_not_exist_holds_no_archive(postgres_server):
    archive = open_archive(postgres_server.url("no_such_database"))
    assert not archive.exists()
    assert not archive.writer_alive()


def test_other_drivers_and_urls_without_a_database_are_refused_without_the_password():
    for url in (f"postgresql+asyncpg://u:{PASSWORD}@host/db", f"postgresql://u:{PASSWORD}@host"):
        with pytest.raises(ConfigError) as refused:
            open_archive(url)
        assert PASSWORD not in str(refused.value)


def test_a_missing_driver_names_the_extra_to_install(archive, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` does when it is not installed
    with pytest.raises(ConfigError, match=r'pip install "prefect-archiver\[postgres\]"'):
        archive.exists()


def test_the_schema_exists_once_migrated_and_migrating_again_applies_nothing(archive):
    assert not archive.exists()
    engine = create_engine(archive.url)
    try:
        assert migrate(engine) == [m.version for m in available()]
        assert migrate(engine) == []
    finally:
        engine.dispose()
    assert archive.exists()


def test_a_first_migration_that_fails_part_way_leaves_no_archive_for_readers_to_trip_on(archive, monkeypatch):
    """A reader during a first sync's migration sees no archive or all of it, never a bookkeeping
    table without the tables it records (which read as 'relation "events" does not exist')."""
    from archiver.storage.migrations import Migration
    from archiver.storage.postgresql import migrate as migrate_module

    first = available()[0]
    broken = Migration(first.version, first.name, first.sql + "\nSELECT no_such_column FROM events;")
    monkeypatch.setattr(migrate_module, "available", lambda: [broken])
    engine = create_engine(archive.url)
    try:
        with pytest.raises(Exception, match="no_such_column"):
            migrate_module.migrate(engine)
    finally:
        engine.dispose()
    assert not archive.exists()
    assert query_postgresql(archive.url, "SELECT to_regclass('schema_migrations') IS NULL") == [(True,)]
    with pytest.raises(ArchiveError, match="no archive in .* yet"):
        archive.reader(timedelta(seconds=5)).status()


def test_a_database_with_only_the_bookkeeping_table_is_no_archive_yet(archive):
    """As an older version's first migration left it while it ran (or when it failed)."""
    import psycopg

    from archiver.storage.postgresql.migrate import BOOTSTRAP

    with psycopg.connect(archive.url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute(BOOTSTRAP)
    assert not archive.exists()
    with pytest.raises(ArchiveError, match="no archive in .* yet"):
        archive.reader(timedelta(seconds=5)).event(uuid.uuid4())


def test_two_processes_migrating_a_new_archive_at_once_apply_each_migration_once(archive):
    applied: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        engine = create_engine(archive.url)
        try:
            applied.append(migrate(engine))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each migration once, whichever process got to it (each takes the migration lock per file, so
    # one may apply the first and another the next).
    assert len(applied) == 3
    assert sorted(v for versions in applied for v in versions) == [m.version for m in available()]


def test_the_writer_lock_names_its_holder_and_its_note(archive):
    assert not archive.writer_alive()
    with archive.writer_lock(holder="run") as lock:
        assert archive.writer_alive()
        holder = archive.writer_holder()
        assert (holder.holder, holder.note) == ("run", None) and holder.pid is not None
        assert lock.note("cannot write the heartbeat: No space left on device (/srv/it's here)")
        assert archive.writer_holder().note == "cannot write the heartbeat: No space left on device (/srv/it's here)"
        with pytest.raises(ArchiveBusy, match=r"prefect-archiver service .*pid \d+") as refused:
            with archive.writer_lock(timedelta(seconds=0.3)):
                pass
        assert PASSWORD not in str(refused.value)
        assert lock.note(None) and archive.writer_holder().note is None
    assert not archive.writer_alive()
    with archive.writer_lock():  # free again
        assert archive.writer_holder().holder == ""


def test_the_writer_lock_waits_for_its_timeout(archive):
    held = archive.writer_lock()
    held.acquire()
    threading.Timer(0.3, held.release).start()
    started = time.monotonic()
    with archive.writer_lock(timedelta(seconds=5)):
        assert time.monotonic() - started >= 0.2


def test_the_writer_lock_is_released_when_its_process_is_killed(archive):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from archiver.storage import open_archive\n"
         f"lock = open_archive({archive.url!r}).writer_lock()\n"
         "lock.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert archive.writer_holder().pid == holder.pid
        holder.kill()
        holder.wait()
        with archive.writer_lock(timedelta(seconds=5)):  # the server dropped the dead process's lock
            assert archive.writer_holder().pid is not None
    finally:
        holder.kill()


def test_an_event_holding_nul_is_quarantined_whole_instead_of_failing_the_batch(archive, make_event):
    writer = archive.writer(timedelta(seconds=5))
    try:
        odd = make_event(T0, payload={"note": "before\x00after"})
        counts = writer.write_batch([odd, make_event(T0)], mark=T0 + timedelta(minutes=1))
        assert (counts.inserted, counts.quarantined) == (1, 1)
        assert writer.high_water_mark() == T0 + timedelta(minutes=1)
        [(raw, reason, event_id)] = query_postgresql(archive.url, "SELECT raw, reason, event_id FROM quarantine")
        assert "before\\u0000after" in raw and "NUL" in reason and event_id == str(odd.id)
        # Sent again, it is a duplicate of its quarantined self, as any malformed item is.
        assert writer.write_batch([odd]).duplicates == 1
    finally:
        writer.close()


def test_writer_errors_never_show_the_password(postgres_server):
    url = f"postgresql+psycopg://nobody:{PASSWORD}@/postgres?host={postgres_server.socket_dir}"
    with pytest.raises(ArchiveError) as refused:
        open_archive(url).writer(timedelta(seconds=1))
    assert PASSWORD not in str(refused.value) and "credentials" in str(refused.value)


def test_the_writer_carries_on_after_the_server_drops_its_connections(archive, postgres_server, make_event):
    writer = archive.writer(timedelta(seconds=5))
    try:
        writer.write_batch([make_event(T0)])
        with postgres_server.admin() as admin:  # a server restart or an idle timeout, as the pool sees it
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", [archive.url.split("/")[-1].split("?")[0]])
        assert writer.write_batch([make_event(T0 + timedelta(seconds=1))]).inserted == 1
    finally:
        writer.close()


def test_the_views_answer_as_duckdbs_for_the_same_writes(archive, tmp_path, make_event):
    """flow_run_states, task_run_states, flow_run_durations, deployment_health, event_volume and
    late_runs: the same rows, column for column, from both backends after the same writes."""
    duck = DuckDBArchive(tmp_path / "archive.duckdb")
    flow, deployment = uuid.uuid4(), uuid.uuid4()
    runs = [uuid.uuid4() for _ in range(5)]
    day = T0.replace(hour=0, minute=0)
    objects = {
        "flows": [{"id": str(flow), "name": "etl", "tags": []}],
        "deployments": [{"id": str(deployment), "name": "nightly", "flow_id": str(flow)}],
        "flow_runs": [
            {"id": str(run), "name": f"run-{n}", "flow_id": str(flow), "deployment_id": str(deployment),
             "state_type": state, "state_name": state.title(), "total_run_time": 1.25 * n,
             "expected_start_time": format_timestamp(day + timedelta(hours=n, seconds=-20 * n)),
             "start_time": format_timestamp(day + timedelta(hours=n, microseconds=n)),
             "end_time": format_timestamp(day + timedelta(hours=n, seconds=7 * n + 1.1))}
            for n, (run, state) in enumerate(zip(runs, ["COMPLETED", "FAILED", "COMPLETED", "CRASHED", "CANCELLED"], strict=True))
        ],
    }
    events = [make_event(T0 + timedelta(minutes=37 * n), flow_run=run) for n, run in enumerate(runs)]
    task_run = event_json(T0, name="prefect.task-run.Completed")
    task_run["resource"]["prefect.resource.id"] = f"prefect.task-run.{uuid.uuid4()}"
    events.append(parse_event(task_run))
    events.append(make_event(T0, name="prefect.flow-run.Failed", payload={"validated_state": {"message": "boom"}}))
    for target in (duck, archive):
        writer = target.writer(timedelta(seconds=5))
        try:
            writer.write_batch(events)
            for kind, found in objects.items():
                writer.save_objects(kind, [o["id"] for o in found], found, give_up_after=5)
        finally:
            writer.close()
    for view in ("flow_run_states", "task_run_states", "flow_run_durations", "deployment_health", "event_volume",
                 "late_runs"):
        sql = f"SELECT * FROM {view}"
        with duckdb.connect(str(duck.path), read_only=True) as conn:
            expected = conn.execute(sql).fetchall()
            columns = [d[0] for d in conn.description]
        assert expected, view
        assert query_columns(archive.url, view) == columns
        assert sorted(query_postgresql(archive.url, sql), key=repr) == sorted(expected, key=repr), view


def query_columns(url: str, view: str) -> list[str]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        cursor = conn.execute(f"SELECT * FROM {view} LIMIT 0")
        return [column.name for column in cursor.description or []]


KILLED_WRITER = """
import sys, uuid
from datetime import timedelta
from archiver.prefect.events import parse_event
from archiver.storage import open_archive
from tests.unit.storage.shapes import T0, event_json
writer = open_archive(sys.argv[1]).writer(timedelta(seconds=5))
size = int(sys.argv[2])
for b in range(10_000):
    batch = [parse_event(event_json(T0 + timedelta(seconds=b * size + i), payload={"n": "x" * 2000}))
             for i in range(size)]
    writer.write_batch(batch, mark=T0 + timedelta(seconds=(b + 1) * size))
    print(b, flush=True)
"""


def test_a_writer_killed_mid_sync_leaves_whole_batches_and_a_mark_that_claims_no_more(archive):
    size = 300
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, archive.url, str(size)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for _ in range(3):  # a few batches committed, the next one under way
            process.stdout.readline()
        time.sleep(0.05)
        process.kill()
        process.wait()
    finally:
        process.kill()
    [(events, mark, below)] = query_postgresql(
        archive.url, "SELECT count(*), (SELECT high_water_mark FROM archive_state), "
                     "count(*) FILTER (WHERE occurred < (SELECT high_water_mark FROM archive_state)) FROM events")
    assert events >= 3 * size and events % size == 0  # whole batches only
    assert below == events and mark == T0 + timedelta(seconds=events)  # the mark is its batches' own


def test_nul_in_run_metadata_and_states_is_replaced_rather_than_failing_every_refresh(archive):
    from archiver.storage.writer import RunState

    run, state_id = uuid.uuid4(), uuid.uuid4()
    writer = archive.writer(timedelta(seconds=5))
    try:
        writer.save_objects("flow_runs", [str(run)], [{"id": str(run), "name": "a\x00b", "parameters": {"x": "c\x00d"}}],
                            give_up_after=5)
        writer.save_states([RunState(
            id=str(state_id), run_kind="flow_run", run_id=str(run), type="FAILED", name="Failed", timestamp=T0,
            message="boom\x00", state_details={}, data_kind="none", storage_key=None, storage_block_id=None,
            serializer_type=None, result_expiration=None, result_prefect_version=None, state={"message": "boom\x00"},
            archived_at=T0)], [])
    finally:
        writer.close()
    assert query_postgresql(archive.url, "SELECT name, parameters FROM flow_runs") == [("a\ufffdb", '{"x":"c\ufffdd"}')]
    assert query_postgresql(archive.url, "SELECT message, state FROM run_states") == [
        ("boom\ufffd", '{"message":"boom\ufffd"}')]


def test_a_write_waits_for_another_sessions_lock_only_as_long_as_its_timeout(archive):
    import psycopg

    writer = archive.writer(timedelta(seconds=0.5))
    try:
        with psycopg.connect(archive.url.replace("postgresql+psycopg://", "postgresql://", 1)) as other:
            other.execute("SELECT * FROM archive_state FOR UPDATE")  # held until `other` ends its transaction
            started = time.monotonic()
            with pytest.raises(ArchiveError, match="rolled back"):
                writer.advance_mark(T0)
            assert 0.4 <= time.monotonic() - started < 5
        writer.advance_mark(T0)  # once the other session lets go
        assert writer.high_water_mark() == T0
    finally:
        writer.close()


def test_status_on_a_database_that_is_not_there_says_so_in_one_line_without_the_password(postgres_server, capsys):
    from archiver.cli import main

    url = postgres_server.url("no_such_archive").replace("postgres@", "postgres:s3cret@")
    assert main(["status", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prefect-archiver: error: no database 'no_such_archive'") and "CREATE DATABASE" in err
    assert "s3cret" not in err and "Traceback" not in err
