"""The archive a backend opens: its writer, its readers, its writer lock and where its service beats."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # readers inside flows import neither side's machinery until they use it
    from archiver.storage.reader import ArchiveReader
    from archiver.storage.writer import ArchiveWriter


class Archive(ABC):
    """One archive, named by its URL; the handle ingest, the service, the CLI and readers receive."""

    url: str  # as given; may hold a password: show `name`, never this

    @property
    @abstractmethod
    def name(self) -> str:
        """How messages and `status` name the archive (a path, or the URL with its password redacted)."""

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
    def writer_lock(self, timeout: timedelta = timedelta(0), holder: str = "") -> AbstractContextManager[object]:
        """Held by every writer for the length of its work (sync, verify --repair, the service).

        ArchiveBusy, naming the holder, when another process keeps it past `timeout`; released
        by the operating system when the holding process dies.
        """

    @abstractmethod
    def writer_alive(self) -> bool:
        """True while some process holds the writer lock (a ledger row 'running' without one was killed)."""

    @property
    @abstractmethod
    def heartbeat_path(self) -> Path:
        """Where `prefect-archiver run` writes its heartbeat for `status` to read."""
