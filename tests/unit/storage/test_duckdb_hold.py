"""The DuckDB writer's hold: back-to-back transactions share one open of the file, and a hold with
nothing to do lets go by itself, so a reader in another process gets in while a sync waits for the
server (writer.DuckDBWriter.holding)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver.storage.duckdb import DuckDBArchive
from archiver.storage.duckdb import writer as writer_module
from archiver.storage.duckdb.connect import reader_waiting, waiting_marker
from archiver.storage.duckdb.writer import DuckDBWriter
from tests.support import poll_until
from tests.unit.storage.shapes import T0

# Another process counting the archived events, read-only: fails while the writer has the file open.
_READER = ("import duckdb, sys; "
           "print(duckdb.connect(sys.argv[1], read_only=True).execute('SELECT count(*) FROM events').fetchone()[0])")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "archive.duckdb"


@pytest.fixture
def writer(archive: Path) -> Iterator[DuckDBWriter]:
    opened = DuckDBArchive(archive).writer(timedelta(seconds=5))
    yield opened
    opened.close()


def _opens(writer: DuckDBWriter) -> list[int]:
    """A running count of the writer's opens of the file."""
    opened = [0]
    sa.event.listen(writer.engine, "connect", lambda *_: opened.__setitem__(0, opened[0] + 1))
    return opened


def _read_from_another_process(path: Path) -> int | None:
    """The events another process counts in the archive, or None while it cannot open the file."""
    done = subprocess.run([sys.executable, "-c", _READER, str(path)], capture_output=True, text=True, timeout=60)
    return int(done.stdout) if done.returncode == 0 else None


def test_transactions_that_follow_each_other_in_a_hold_share_one_open(writer, make_event):
    opens = _opens(writer)
    with writer.holding():
        writer.write_batch([make_event(T0)], mark=T0)
        assert writer.high_water_mark() == T0
        writer.advance_mark(T0 + timedelta(seconds=1))
        assert opens[0] == 1
    writer.high_water_mark()  # outside a hold every transaction opens the file
    writer.high_water_mark()
    assert opens[0] == 3


def test_a_hold_lets_go_of_the_file_once_idle_and_opens_it_again_for_the_next_write(archive, writer, make_event):
    with writer.holding():
        writer.write_batch([make_event(T0)])
        # No release(): the writer is "waiting for the server", and a reader gets in all the same.
        assert poll_until(lambda: _read_from_another_process(archive), "a reader while the hold is idle") == 1
        writer.write_batch([make_event(T0 + timedelta(seconds=1))])
    assert _read_from_another_process(archive) == 2


def test_holds_nest_the_inner_one_ending_keeps_the_outer_ones_connection(writer, make_event):
    opens = _opens(writer)
    with writer.holding():
        with writer.holding():
            writer.write_batch([make_event(T0)], mark=T0)
        assert writer.high_water_mark() == T0
        assert opens[0] == 1


def test_a_hold_keeps_the_file_while_a_backfill_waits_between_batches(writer, make_event):
    # A backfill's writer waits ~0.5 s for each next 2,000 events: letting go and opening again
    # each time cost a checkpoint and an open a batch.
    opens = _opens(writer)
    with writer.holding():
        writer.write_batch([make_event(T0)])
        time.sleep(0.2)
        writer.write_batch([make_event(T0 + timedelta(seconds=1))])
        assert opens[0] == 1


def test_a_waiting_reader_makes_an_idle_hold_let_go_at_once(archive, writer, make_event, monkeypatch):
    monkeypatch.setattr(writer_module, "IDLE_RELEASE_SECONDS", 3600.0)  # idle, it would keep the file for an hour
    with writer.holding():
        writer.write_batch([make_event(T0)])
        assert not reader_waiting(archive)
        waiting_marker(archive).touch()  # what a reader of ours does at each retry
        assert reader_waiting(archive)
        # Then even a reader that cannot say it waits (plain duckdb) gets in after WAITED_IDLE_SECONDS.
        assert poll_until(lambda: _read_from_another_process(archive), "a reader once one waits") == 1


_ARCHIVER_READER = ("import sys; from datetime import timedelta; from pathlib import Path; "
                    "from archiver.storage.duckdb.connect import open_reader; "
                    "conn = open_reader(Path(sys.argv[1]), timedelta(seconds=60)); "
                    "print(conn.execute('SELECT count(*) FROM events').fetchone()[0])")


def test_a_reader_of_ours_is_let_in_while_batches_keep_coming_and_leaves_no_marker(archive, writer, make_event,
                                                                                    monkeypatch):
    monkeypatch.setattr(writer_module, "HOLD_SECONDS", 3600.0)  # busy, it would keep the file for an hour
    with writer.holding():
        writer.write_batch([make_event(T0)])
        reader = subprocess.Popen([sys.executable, "-c", _ARCHIVER_READER, str(archive)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        written = 1
        deadline = time.monotonic() + 60
        while reader.poll() is None and time.monotonic() < deadline:  # never idle long enough to let go by itself
            writer.write_batch([make_event(T0 + timedelta(seconds=written))])
            written += 1
            time.sleep(0.05)
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert 1 <= int(out) <= written
    assert not waiting_marker(archive).exists()
