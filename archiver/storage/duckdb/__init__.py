"""The DuckDB backend: one archive file, one writer at a time, readers between its commits.

The file, its writer lock (`<file>.lock`) and the service's heartbeat (`<file>.service.json`) sit
side by side. While a process has the file open read-write no other process can open it at all,
so the writer holds it only while it commits and every opener retries briefly (connect.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from archiver.errors import ConfigError
from archiver.storage.base import Archive, WriterHolder

if TYPE_CHECKING:
    from archiver.storage.duckdb.lock import SyncLock
    from archiver.storage.duckdb.reader import DuckDBReader
    from archiver.storage.duckdb.rows import DuckDBSink, DuckDBSource
    from archiver.storage.duckdb.writer import DuckDBWriter

PREFIX = "duckdb:///"


def archive_url(path: Path) -> str:
    """The SQLAlchemy URL of the archive file at `path` (duckdb-engine's), percent-encoded."""
    return PREFIX + quote(str(path))


def open_archive(url: str) -> DuckDBArchive:
    """The archive file a `duckdb:///path` URL names (relative paths from the working directory).

    The path is percent-encoded as in any URL (a `?` in a file name is %3F); options after `?`
    are refused rather than ignored.
    """
    if not url.startswith(PREFIX) or url == PREFIX:
        raise ConfigError(f"a DuckDB archive URL is duckdb:///PATH (duckdb:////abs/path/archive.duckdb), not {url!r}")
    if "?" in url:
        raise ConfigError(f"the DuckDB archive URL {url!r} has options after '?', which prefect-archiver does not "
                          "take; name the file alone (a '?' in its name is written %3F)")
    return DuckDBArchive(Path(unquote(url.removeprefix(PREFIX))))


class DuckDBArchive(Archive):
    """An archive in one DuckDB file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = archive_url(path)

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def identity(self) -> str:
        return f"duckdb:///{self.path.resolve()}"

    def exists(self) -> bool:
        return self.path.exists()

    def writer(self, timeout: timedelta) -> DuckDBWriter:
        from archiver.storage.duckdb.writer import DuckDBWriter

        return DuckDBWriter(self.path, timeout)

    def reader(self, timeout: timedelta) -> DuckDBReader:
        from archiver.storage.duckdb.reader import DuckDBReader

        return DuckDBReader(self.path, timeout)

    def table_source(self, timeout: timedelta) -> DuckDBSource:
        from archiver.storage.duckdb.rows import open_source

        return open_source(self.path, timeout)

    def table_sink(self, timeout: timedelta) -> DuckDBSink:
        from archiver.storage.duckdb.rows import open_sink

        return open_sink(self.path, timeout)

    def writer_lock(self, timeout: timedelta = timedelta(0), holder: str = "") -> SyncLock:
        from archiver.storage.duckdb.lock import SyncLock

        return SyncLock(self.path, timeout, holder)

    def writer_holder(self) -> WriterHolder:
        from archiver.storage.duckdb.lock import lock_holder, lock_note, read_lock

        text = read_lock(self.path)
        pid, holder = lock_holder(text)
        return WriterHolder(pid, holder, lock_note(text))

    def writer_alive(self) -> bool:
        from archiver.storage.duckdb.lock import lock_is_held

        return lock_is_held(self.path)

    @property
    def heartbeat_path(self) -> Path:
        return self.path.with_name(self.path.name + ".service.json")
