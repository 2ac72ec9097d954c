"""One writer per PostgreSQL archive: a session-level advisory lock held on a connection of its own.

The lock (pg_try_advisory_lock on WRITER_LOCK_KEY, scoped to the archive's database) lives exactly
as long as that connection: released on exit, and by the server when the holding process dies
and its connection drops (SIGKILL included), so a crashed sync never leaves a stale lock. Who
holds it is readable by anyone who can connect, from pg_locks joined to pg_stat_activity:

- the holder's pid and role ("run" for the service) are the connection's application_name,
  "prefect-archiver writer PID [HOLDER]";
- a note for readers (WriterLock.note) is the last statement the connection ran, a constant
  "SELECT 'prefect-archiver note:<hex>'" (pg_stat_activity.query; hex, so no quoting can break
  it). It needs nothing written anywhere: it works before the schema exists and on a full disk.
  PostgreSQL shows a session's query only to its own role, members of pg_read_all_stats and
  superusers: another role reading status sees the holder but not its note.

A session lock needs a session: connect directly or through session pooling, not a transaction
pooler (PgBouncer pool_mode=transaction would hand the lock's session to others). If the server
drops the lock's connection (a restart) the lock is gone while its holder writes on; what then
keeps the archive whole is what keeps it whole anyway: every batch is one idempotent transaction.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from archiver.errors import ArchiveBusy
from archiver.storage.base import WriterHolder
from archiver.storage.postgresql.connect import APPLICATION_NAME, DatabaseMissing, classify, raw_connect

if TYPE_CHECKING:
    import psycopg

# A constant of ours (ASCII "parchwr1"); both 32-bit halves are below 2**31, so pg_locks' classid
# (the high half) and objid (the low half) compare as plain integers. objsubid 1: a bigint key.
WRITER_LOCK_KEY = 0x7061_7263_6877_7231
_CLASSID, _OBJID = WRITER_LOCK_KEY >> 32, WRITER_LOCK_KEY & 0xFFFF_FFFF
WRITER_NAME = f"{APPLICATION_NAME} writer"
NOTE_PREFIX = "prefect-archiver note:"
# pg_stat_activity keeps the first track_activity_query_size bytes (1024 by default) of a query.
MAX_NOTE_BYTES = 400
RETRY_SECONDS = 0.2

_HOLDERS = f"""
SELECT a.application_name, a.query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = {_CLASSID} AND l.objid::bigint = {_OBJID}
  AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_APPLICATION = re.compile(rf"^{re.escape(WRITER_NAME)} (\d+)(?: (\S+))?$")
_NOTE = re.compile(rf"^SELECT '{re.escape(NOTE_PREFIX)}([0-9a-f]*)'$")


def _holder(rows: list[tuple[Any, ...]]) -> WriterHolder:
    """The holder as its connection describes itself (WriterHolder(None, "", None): nobody holds it)."""
    if not rows:
        return WriterHolder(None, "", None)
    application, query = rows[0]
    found = _APPLICATION.match(application or "")
    noted = _NOTE.match((query or "").strip())
    note = bytes.fromhex(noted.group(1)).decode(errors="replace") if noted and noted.group(1) else None
    return WriterHolder(int(found.group(1)) if found else None, (found.group(2) or "") if found else "", note)


def _holders(url: str) -> list[tuple[Any, ...]]:
    """pg_locks' rows for the writer lock of the archive at `url` (none when its database does not exist)."""
    try:
        conn = raw_connect(url, f"{APPLICATION_NAME} status")
    except DatabaseMissing:
        return []
    with conn:
        return conn.execute(_HOLDERS).fetchall()


def read_holder(url: str) -> WriterHolder:
    """Who holds the writer lock of the archive at `url`."""
    return _holder(_holders(url))


def lock_is_held(url: str) -> bool:
    """True while some connection (this process's included) holds the writer lock."""
    return bool(_holders(url))


class AdvisoryLock:
    """Held for the length of a sync, verify --repair, or scheduled service (Archive.writer_lock)."""

    def __init__(self, url: str, timeout: timedelta = timedelta(0), holder: str = "") -> None:
        from archiver.storage import redact

        self.url = url
        self.name = redact(url)
        self.timeout = timeout
        self.holder = holder  # "run" for the service
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> None:
        application = f"{WRITER_NAME} {os.getpid()} {self.holder}".strip()
        conn = raw_connect(self.url, application)
        deadline = time.monotonic() + self.timeout.total_seconds()
        try:
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() >= deadline:
                    raise self._busy(_holder(conn.execute(_HOLDERS).fetchall()))
                time.sleep(RETRY_SECONDS)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, ArchiveBusy):
                raise
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise classify(self.url, exc) from None
            raise
        self._conn = conn

    def _busy(self, holder: WriterHolder) -> ArchiveBusy:
        pid = holder.pid
        if holder.holder == "run":
            return ArchiveBusy(
                f"the prefect-archiver service (`prefect-archiver run`, pid {pid}) holds {self.name} and syncs it "
                "on its schedule; stop the service to sync or repair by hand"
            )
        return ArchiveBusy(
            f"another prefect-archiver process{f' (pid {pid})' if pid else ''} is writing {self.name}; wait for it "
            "to finish (or set archive.lock_timeout to wait for it)"
        )

    def note(self, note: str | None) -> bool:
        """Say something to readers of the lock (None: clear it); False when it could not be said.

        The note becomes the lock connection's current statement, which pg_stat_activity shows:
        nothing is written to disk on either side.
        """
        if self._conn is None:
            return False
        encoded = (note or "").encode()[:MAX_NOTE_BYTES].hex()
        try:
            self._conn.execute(f"SELECT '{NOTE_PREFIX}{encoded}'".encode())
        except Exception:  # the server is unreachable: the note cannot be left
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:  # closing the connection releases the lock too; unlocking first says so at once
                conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_KEY,))
            except Exception:  # noqa: S110 - the connection is gone, and the lock with it
                pass
            finally:
                conn.close()

    def __enter__(self) -> AdvisoryLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
