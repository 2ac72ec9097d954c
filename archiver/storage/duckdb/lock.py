"""One writer per archive across processes: an OS lock on a file beside the archive.

DuckDB's own lock only lasts while a connection is open, and our writer lets go between batches so
readers can get in; this lock spans the whole sync. The kernel drops it when the process dies,
SIGKILL included, so a crashed sync never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from archiver.errors import ArchiveBusy


def lock_path(db_path: Path) -> Path:
    """The sync lock's file beside the archive (its text: the holder's pid, and "run" for the service)."""
    return db_path.with_name(db_path.name + ".lock")


def lock_holder(text: str) -> tuple[int | None, str]:
    """(pid, holder) from a lock file's text: "PID [HOLDER]" on its first line."""
    first = text.split("\n", 1)[0]
    parts = first.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, parts[1] if len(parts) > 1 else ""


def lock_note(text: str) -> str | None:
    """What the holder noted below its first line (SyncLock.note), if anything."""
    rest = text.split("\n", 1)[1:] or [""]
    return rest[0].strip() or None


def read_lock(db_path: Path) -> str:
    """The text of the archive's lock file; "" when there is none."""
    try:
        return lock_path(db_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def lock_is_held(db_path: Path) -> bool:
    """True while some process (this one included) holds the sync lock of this archive."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken just now
    return False


class SyncLock:
    """Held for the length of a sync, verify --repair, or scheduled service."""

    def __init__(self, db_path: Path, timeout: timedelta = timedelta(0), holder: str = "") -> None:
        self.db_path = db_path
        # Written after the pid, so a refused process can say who holds the archive ("run").
        self.holder = holder
        self.path = lock_path(db_path)
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid, holder = lock_holder(os.pread(fd, 64, 0).decode(errors="replace"))
                    os.close(fd)
                    if holder == "run":
                        raise ArchiveBusy(
                            f"the prefect-archiver service (`prefect-archiver run`, pid {pid}) holds {self.db_path} "
                            "and syncs it on its schedule; stop the service to sync or repair by hand"
                        ) from None
                    raise ArchiveBusy(
                        f"another prefect-archiver process{f' (pid {pid})' if pid else ''} is writing {self.db_path}; "
                        "wait for it to finish (or set archive.lock_timeout to wait for it)"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._text().encode(), 0)
        self._fd = fd

    def _text(self, note: str | None = None) -> str:
        return f"{os.getpid()} {self.holder}".strip() + (f"\n{note}\n" if note else "")

    def note(self, note: str | None) -> bool:
        """Say something to readers of the lock file below the holder's line (None: clear it).

        The service notes here why it cannot write its heartbeat: rewriting a few bytes of a file
        it already holds open needs no new file and, on most file systems, no new disk block —
        so it usually works on a full disk, where the heartbeat's new file does not. False when
        even this could not be written.
        """
        if self._fd is None:
            return False
        data = self._text(note).encode()
        try:
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
