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

from archiver.errors import ArchiveBusy, ArchiveDamaged, ArchiveError, ArchiveIncompatible

T = TypeVar("T")

# A reader inside a flow should not grow DuckDB's cache to 80% of the machine's memory.
READER_CONFIG: dict[str, str | bool | int | float | list[str]] = {"memory_limit": "256MB", "threads": 1}

_LOCK = re.compile(r"Could not set lock|Conflicting lock", re.I)
_PID = re.compile(r"PID (\d+)")
_VERSION = re.compile(r"storage version|newer version|older version|incompatible", re.I)
# Not "invalidated": that is DuckDB after a failed commit (disk full), not a damaged file.
_DAMAGED = re.compile(r"not a valid DuckDB database|database file .* is corrupt|checksum|Corrupt", re.I)


def classify(path: Path, exc: BaseException) -> ArchiveError | None:
    """Turn a DuckDB error raised while opening `path` into one of ours, or None if unknown."""
    text = str(exc)
    if _LOCK.search(text):
        pid = _PID.search(text)
        holder = f" (pid {pid.group(1)})" if pid else ""
        return ArchiveBusy(
            f"archive {path} is held by another process{holder}; it is probably a sync committing "
            "— try again in a moment (readers retry for archive.read_timeout)"
        )
    if _VERSION.search(text):
        return ArchiveIncompatible(
            f"archive {path} was written by a different DuckDB storage version ({text.splitlines()[0]}); "
            "install the duckdb version prefect-archiver pins (duckdb>=2.0,<2.1) in this environment"
        )
    if _DAMAGED.search(text) or isinstance(exc, duckdb.SerializationException):
        return ArchiveDamaged(
            f"archive {path} cannot be read as a DuckDB archive ({text.splitlines()[0]}). Nothing was "
            "changed. Move the file aside (keep it: it may hold events the server no longer has) "
            "and run `prefect-archiver sync` to start a new archive from what the server retains"
        )
    return None


def with_lock_retry(path: Path, timeout: timedelta, opener: Callable[[], T]) -> T:
    """Call `opener` until it gets past another process's lock on `path`, or the deadline passes."""
    deadline = time.monotonic() + timeout.total_seconds()
    delay = 0.002
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
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def require_archive(path: Path) -> None:
    """ArchiveError unless an archive file exists at `path` (reading must not create one)."""
    if not path.exists():
        raise ArchiveError(f"no archive at {path}: run `prefect-archiver sync` first, or set ARCHIVER_DB")


def open_reader(path: Path, timeout: timedelta = timedelta(seconds=15)) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the archive, waiting up to `timeout` for a committing writer."""
    require_archive(path)
    conn = with_lock_retry(path, timeout, lambda: duckdb.connect(str(path), read_only=True, config=READER_CONFIG))
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
