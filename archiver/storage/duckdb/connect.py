"""Opening the archive file through DuckDB's one-process lock, for reading or writing.

While any process has the file open read-write, no other process can open it at all — not even
read-only (see shared/stack-notes.md). So the writer holds the file only while it commits a batch,
and every opener (reader or writer) retries briefly on the lock with a small backoff and a
deadline. This module is imported by readers inside flows, so it stays free of SQLAlchemy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from archiver.errors import ArchiveBusy, ArchiveDamaged, ArchiveError, ArchiveIncompatible, ArchiveMissing

T = TypeVar("T")

Config = dict[str, str | bool | int | float | list[str]]

# Every connection to the archive, reader or writer: a file or a query must never make DuckDB
# download or load an extension (opening a SQLite file as an archive fetched sqlite_scanner).
NO_EXTENSIONS: Config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
# A reader inside a flow should not grow DuckDB's cache to 80% of the machine's memory.
READER_CONFIG: Config = {**NO_EXTENSIONS, "memory_limit": "256MB", "threads": 1}

# A DuckDB database file starts with an 8-byte checksum, then this (duckdb storage/storage_info.hpp).
DUCKDB_MAGIC, MAGIC_OFFSET = b"DUCK", 8
# Other databases people point --db at by mistake, by the first bytes of their files.
_OTHER_FORMATS = {b"SQLite format 3\x00": "a SQLite database", b"PAR1": "a Parquet file"}

# The longest an opener waits between two tries on the lock (with_lock_retry's backoff cap).
MAX_RETRY_DELAY = 0.05
# A reader waiting for the writer says so by touching this file beside the archive at each retry
# (waiting_marker): the writer then lets go as soon as it can, and otherwise keeps the file across
# a backfill's batches (writer.HOLD_SECONDS). Touched longer ago than this, it is a reader gone.
READER_WAIT_FRESH_SECONDS = 1.0

_LOCK = re.compile(r"Could not set lock|Conflicting lock", re.I)
_PID = re.compile(r"PID (\d+)")
_VERSION = re.compile(r"storage version|newer version|older version|incompatible", re.I)
# Not "invalidated": that is DuckDB after a failed commit (disk full), not a damaged file.
_DAMAGED = re.compile(r"not a valid DuckDB database|database file .* is corrupt|checksum|Corrupt", re.I)


# A DuckDB file starts with three 4 KB header blocks, written as the file is created: a file shorter
# than that is one a first sync is creating this instant (a reader raced it), not a damaged archive.
HEADER_BYTES = 3 * 4096


def _being_created(path: Path) -> bool:
    """Shorter than DuckDB's headers, and holding nothing yet or the start of DuckDB's own header."""
    try:
        if path.stat().st_size >= HEADER_BYTES:
            return False
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return not head.strip(b"\x00") or head[MAGIC_OFFSET:MAGIC_OFFSET + 4] == DUCKDB_MAGIC


def classify(path: Path, exc: BaseException) -> ArchiveError | None:
    """Turn a DuckDB error raised while opening `path` into one of ours, or None if unknown."""
    text = str(exc)
    if _LOCK.search(text):
        return _busy(path, text)
    if _VERSION.search(text):
        return ArchiveIncompatible(
            f"archive {path} was written by a different DuckDB storage version ({text.splitlines()[0]}); "
            "install the duckdb version prefect-archiver pins (duckdb>=2.0,<2.1) in this environment"
        )
    if _DAMAGED.search(text) or isinstance(exc, duckdb.SerializationException):
        if _being_created(path):
            return ArchiveError(
                f"archive {path} has no tables yet (a first sync is creating it right now); "
                "run `prefect-archiver sync`, or try again in a moment"
            )
        return ArchiveDamaged(
            f"archive {path} cannot be read as a DuckDB archive ({text.splitlines()[0]}). Nothing was "
            "changed. Move the file aside (keep it: it may hold events the server no longer has) "
            "and run `prefect-archiver sync` to start a new archive from what the server retains"
        )
    return None


def _busy(path: Path, text: str) -> ArchiveBusy:
    """Who holds DuckDB's lock on `path`: a prefect-archiver writer committing, or another program."""
    from archiver.storage.duckdb.lock import lock_holder, read_lock

    found = _PID.search(text)
    pid = int(found.group(1)) if found else None
    # DuckDB names the program: "Conflicting lock is held in /usr/bin/python3 (PID 123) by user …".
    program = re.search(r"held in (.+?) \(PID", text)
    # The sync lock's file names the pid of the prefect-archiver writer (it outlives the writer,
    # but a pid DuckDB reports as holding the file is alive).
    writer, _ = lock_holder(read_lock(path))
    if pid is not None and pid == writer:
        return ArchiveBusy(
            f"archive {path} is being written by a prefect-archiver sync (pid {pid}) committing a batch; "
            "try again in a moment (readers wait up to archive.read_timeout)"
        )
    who = f"pid {pid}" if pid is not None else "another process"
    if program:
        who += f", {program.group(1)}"
    return ArchiveBusy(
        f"archive {path} is open in another process ({who}) that is not a prefect-archiver sync — a reader "
        "such as a long `prefect-archiver sql` query, a DuckDB shell or a notebook keeping a connection open; "
        "DuckDB shares a file between processes only while none of them writes: close that connection (or "
        "open it read-only, briefly) and try again"
    )


def with_lock_retry(path: Path, timeout: timedelta, opener: Callable[[], T], *, reader: bool = False) -> T:
    """Call `opener` until it gets past another process's lock on `path`, or the deadline passes.

    A `reader` waiting touches waiting_marker(path) at each retry, so the writer lets go soon.
    """
    deadline = time.monotonic() + timeout.total_seconds()
    delay = 0.002
    waited = False
    try:
        while True:
            try:
                return opener()
            except Exception as exc:  # DuckDB, or SQLAlchemy wrapping DuckDB
                original = getattr(exc, "orig", None) or exc
                error = classify(path, original)
                if error is None:
                    raise
                if not isinstance(error, ArchiveBusy) or time.monotonic() + delay > deadline:
                    raise error from None
            if reader:
                waited = _touch(waiting_marker(path)) or waited
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)
    finally:
        if waited:  # served or given up; another reader still waiting touches it again
            try:
                waiting_marker(path).unlink(missing_ok=True)
            except OSError:
                pass


def waiting_marker(path: Path) -> Path:
    """The file a reader waiting for the writer touches (READER_WAIT_FRESH_SECONDS)."""
    return path.with_name(path.name + ".reader-waiting")


def reader_waiting(path: Path) -> bool:
    """Whether a reader is waiting for the writer of `path` to let go (one stat)."""
    try:
        return time.time() - waiting_marker(path).stat().st_mtime < READER_WAIT_FRESH_SECONDS
    except OSError:
        return False


def _touch(marker: Path) -> bool:
    try:
        marker.touch()
        return True
    except OSError:  # a folder the reader may not write to: the writer lets go within HOLD_SECONDS anyway
        return False


def require_archive(path: Path) -> None:
    """ArchiveMissing unless an archive file exists at `path` (reading must not create one)."""
    if not path.exists():
        raise ArchiveMissing(path)
    require_duckdb_file(path)


def require_duckdb_file(path: Path) -> None:
    """ArchiveDamaged when `path` exists and is not a DuckDB file, before DuckDB is let near it.

    DuckDB itself would try to read a SQLite file through its sqlite extension (fetching it), and a
    writer must never turn someone's other database into an archive. An empty file is left to
    DuckDB, which starts a new database in it.
    """
    try:
        with path.open("rb") as file:
            head = file.read(MAGIC_OFFSET + len(DUCKDB_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ArchiveError(f"archive {path} cannot be read: {exc.strerror or exc}") from None
    if not head or head[MAGIC_OFFSET:] == DUCKDB_MAGIC:
        return
    kind = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic[: len(head)])), None)
    elsewhere = ("point --db or ARCHIVER_DB at your archive (a DuckDB file; by default "
                 "$PREFECT_HOME/archive.duckdb), or at a path with no file yet to start a new archive there")
    if kind:
        raise ArchiveDamaged(f"{path} is not a DuckDB archive (it looks like {kind}); nothing was read or "
                             f"changed: {elsewhere}")
    raise ArchiveDamaged(
        f"{path} is not a DuckDB archive (its first bytes are not DuckDB's); nothing was read or changed. If it "
        "was your archive, it is damaged: Move the file aside (keep it: it may hold events the server no "
        f"longer has) and run `prefect-archiver sync` to start a new archive; otherwise {elsewhere}"
    )


def open_duckdb(database: str, *, read_only: bool = False, config: Config | None = None) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, with the settings no connection of ours may lack.

    Extensions are never fetched (NO_EXTENSIONS, in `config`). DuckDB draws a progress bar on
    stdout for any query past 2 s, even into a pipe, where it lands inside `sql --format json`,
    `export --json` or `copy --json`: it is a session setting, not a connect option, so it is set
    here, on every connection.
    """
    settings = dict(config if config is not None else NO_EXTENSIONS)
    locked = settings.pop("lock_configuration", False)  # locked only once the bar is off
    conn = duckdb.connect(database, read_only=read_only, config=settings)
    quiet(conn)
    if locked:
        conn.execute("SET lock_configuration = true")
    return conn


def quiet(conn: Any) -> None:
    """Turn DuckDB's stdout progress bar off on `conn` (a DuckDB or a duckdb-engine DB-API connection)."""
    conn.execute("SET enable_progress_bar = false")


def open_reader(path: Path, timeout: timedelta = timedelta(seconds=15)) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the archive, waiting up to `timeout` for a committing writer."""
    require_archive(path)
    conn = with_lock_retry(path, timeout, lambda: open_duckdb(str(path), read_only=True, config=READER_CONFIG),
                           reader=True)
    try:
        version = scalar(conn, "SELECT max(version) FROM schema_migrations")
    except duckdb.CatalogException:
        version = None
    if version is None:
        conn.close()
        raise ArchiveError(
            f"archive {path} has no tables yet (a first sync may be creating it right now); "
            "run `prefect-archiver sync`, or try again in a moment"
        )
    return conn


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The first column of the first row, or None."""
    row = conn.execute(sql, params or []).fetchone()
    return row[0] if row else None
