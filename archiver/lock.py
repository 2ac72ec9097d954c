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

# What the ledger says of a run left 'running' while no process holds the lock: its process died
# without recording its end (SIGKILL, out of memory, the machine stopped).
ORPHANED_RUN_ERROR = "the process ended without finishing this run (killed, or the machine stopped)"


def lock_holder(text: str) -> tuple[int | None, str]:
    """(pid, holder) from a lock file's text "PID [HOLDER]"."""
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, parts[1] if len(parts) > 1 else ""


def lock_is_held(db_path: Path) -> bool:
    """True while some process (this one included) holds the sync lock of this archive."""
    try:
        fd = os.open(db_path.with_name(db_path.name + ".lock"), os.O_RDONLY)
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
        self.path = db_path.with_name(db_path.name + ".lock")
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
        os.pwrite(fd, f"{os.getpid()} {self.holder}".strip().encode(), 0)
        self._fd = fd

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
