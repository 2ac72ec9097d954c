"""The PostgreSQL archive handle: its name, its writer lock, its migrations under concurrency, its errors.

What every backend answers alike is in the contract suite (the `backend` fixture); this is what only
a PostgreSQL archive has: a URL with a password, a server to reach, an advisory lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from archiver.errors import ArchiveBusy, ArchiveError, ConfigError
from archiver.storage import open_archive
from archiver.storage.postgresql import PostgreSQLArchive
from archiver.storage.postgresql.connect import create_engine
from archiver.storage.postgresql.migrate import available, migrate

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
    assert sorted(applied, key=len) == [[], [], [m.version for m in available()]]


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
