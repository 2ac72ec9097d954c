"""The DuckDB writer's hold: back-to-back transactions share one open of the file, and a hold with
nothing to do lets go by itself, so a reader in another process gets in while a sync waits for the
server (writer.DuckDBWriter.holding)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from archiver.storage.duckdb import DuckDBArchive
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
