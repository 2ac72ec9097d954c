"""The archive a backend opens: its writer, its readers, its writer lock and where its service beats."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # readers inside flows import neither side's machinery until they use it
    from archiver.storage.reader import ArchiveReader
    from archiver.storage.rows import TableSink, TableSource
    from archiver.storage.writer import ArchiveWriter


class ArchiveCounts(Protocol):
    """What the archive says of its own extent, for comparing it with the server (reconcile,
    verify, gap detection). ArchiveWriter and ArchiveReader both answer it: a sync asks its writer,
    `verify` without --repair a reader, so comparing never opens the archive for writing."""

    def high_water_mark(self) -> datetime | None: ...

    def bucket_counts(self, since: datetime, until: datetime, width: timedelta) -> dict[datetime, int]: ...

    def newest_occurred_before(self, moment: datetime) -> datetime | None: ...

    def gaps(self) -> list[tuple[datetime, datetime]]: ...


class WriterLock(Protocol):
    """The writer lock a backend hands out: held in a `with`, and a line its holder can leave for readers.

    A Protocol, not an ABC: it is a small OS-level object each backend makes its own way.
    """

    def __enter__(self) -> object: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def note(self, note: str | None) -> bool:
        """Say something to readers of the lock (None: clear it); False when it could not be said."""
        ...


@dataclass(frozen=True)
class WriterHolder:
    """Who holds (or last held) the writer lock, as the holder wrote it."""

    pid: int | None
    holder: str  # "run" for the service, "" for a sync or verify
    note: str | None  # what the holder said to readers (WriterLock.note), e.g. why it cannot beat


class Archive(ABC):
    """One archive, named by its URL; the handle ingest, the service, the CLI and readers receive."""

    url: str  # as given; may hold a password: show `name`, never this

    @property
    @abstractmethod
    def name(self) -> str:
        """How messages and `status` name the archive (a path, or the URL with its password redacted)."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """Which archive this is, however its URL is spelled and never with a password (copy records it)."""

    @abstractmethod
    def exists(self) -> bool:
        """True when there is an archive to read (reading never creates one)."""

    @abstractmethod
    def writer(self, timeout: timedelta) -> ArchiveWriter:
        """The writer, with the schema migrated; waits up to `timeout` for a busy store."""

    @abstractmethod
    def reader(self, timeout: timedelta) -> ArchiveReader:
        """A reader (storage.reader) that waits up to `timeout` for a committing writer.

        Building it touches nothing (serve builds one before any archive exists); each of its
        reads raises ArchiveMissing when there is no archive.
        """

    @abstractmethod
    def table_source(self, timeout: timedelta) -> TableSource:
        """Every table as rows, read from one consistent state of the archive (copy's source; never writes)."""

    @abstractmethod
    def table_sink(self, timeout: timedelta) -> TableSink:
        """Every table as rows, for writing (copy's destination): call writer() first to migrate, and
        hold writer_lock() while it is open."""

    @abstractmethod
    def writer_lock(self, timeout: timedelta = timedelta(0), holder: str = "") -> WriterLock:
        """Held by every writer for the length of its work (sync, verify --repair, the service).

        ArchiveBusy, naming the holder, when another process keeps it past `timeout`; released
        by the operating system when the holding process dies.
        """

    @abstractmethod
    def writer_holder(self) -> WriterHolder:
        """Who holds the writer lock, readable while it is held (`status` asks whether the service does)."""

    @abstractmethod
    def writer_alive(self) -> bool:
        """True while some process holds the writer lock (a ledger row 'running' without one was killed)."""

    @property
    @abstractmethod
    def heartbeat_path(self) -> Path:
        """Where `prefect-archiver run` writes its heartbeat for `status` to read."""
