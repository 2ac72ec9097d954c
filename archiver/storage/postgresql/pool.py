"""The readers' connections to a PostgreSQL archive: opened read-only, kept idle between calls.

An idle PostgreSQL connection holds no lock and no snapshot (MVCC), so unlike a DuckDB file it
keeps nobody out: readers keep a few per archive, per process, and a lookup by id costs one round
trip instead of a connect (a socket, authentication and, remote, TLS). Every connection is in
autocommit with `default_transaction_read_only` on, so between calls none sits in a transaction,
and nothing a reader runs can write. A connection the server dropped is replaced on its next use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import psycopg

from archiver.storage.postgresql.connect import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_SECONDS,
    DatabaseMissing,
    classify,
    parse_url,
)

T = TypeVar("T")

# A database holds an archive once its first migration committed: schema_migrations and the events
# table together (an archive made by an older version may have committed the first alone).
ARCHIVE_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL AND to_regclass('events') IS NOT NULL"

# Idle connections kept per archive URL: serve's concurrent requests, a flow's lookups.
MAX_IDLE = 4
READER_NAME = f"{APPLICATION_NAME} reader"

# By archive URL and lock timeout (each connection carries its own lock_timeout).
_idle: dict[tuple[str, timedelta], list[psycopg.Connection[Any]]] = {}
_lock = threading.Lock()
_pid = os.getpid()


def conninfo(url: str) -> str:
    """The archive URL as libpq reads it: SQLAlchemy's postgresql+psycopg:// is libpq's postgresql://
    with the same user, password, host, port, database and query options."""
    parse_url(url)  # ConfigError for a URL that is not PostgreSQL's
    return "postgresql://" + url.split("://", 1)[1]


def _open(url: str, timeout: timedelta) -> psycopg.Connection[Any]:
    # lock_timeout: a reader waits only behind an exclusive table lock (a migration committing),
    # and for no longer than its timeout; what the writer's batches take never blocks a read.
    lock_ms = max(1, int(timeout.total_seconds() * 1000))
    options = f"-c TimeZone=UTC -c default_transaction_read_only=on -c lock_timeout={lock_ms}"
    try:
        conn = psycopg.connect(conninfo(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                               application_name=READER_NAME, options=options)
    except psycopg.Error as exc:
        raise classify(url, exc) from None
    try:
        row = conn.execute(ARCHIVE_EXISTS).fetchone()
    except psycopg.Error as exc:
        conn.close()
        raise classify(url, exc) from None
    if not (row and row[0]):
        conn.close()
        from archiver.storage import redact

        name = redact(url)
        raise DatabaseMissing(name, f"no archive in {name} yet (the database has no archive tables): run "
                                    "`prefect-archiver sync` to start one there, or check the database in the URL")
    return conn


def take(url: str, timeout: timedelta) -> tuple[psycopg.Connection[Any], bool]:
    """A connection to the archive, and whether it was reused (an idle one) or opened now."""
    global _pid
    with _lock:
        if os.getpid() != _pid:  # a forked child: the parent's sockets are not ours to use or close
            _idle.clear()
            _pid = os.getpid()
        idle = _idle.get((url, timeout))
        if idle:
            return idle.pop(), True
    return _open(url, timeout), False


def give_back(url: str, timeout: timedelta, conn: psycopg.Connection[Any]) -> None:
    """Keep `conn` for the next call if it is healthy and idle (no transaction left open)."""
    healthy = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with _lock:
        idle = _idle.setdefault((url, timeout), [])
        if healthy and len(idle) < MAX_IDLE and os.getpid() == _pid:
            idle.append(conn)
            return
    conn.close()


def begin(url: str, timeout: timedelta, statement: str) -> psycopg.Connection[Any]:
    """A connection that has run `statement` (a session's BEGIN), on a new one if a reused one was dropped."""
    conn, reused = take(url, timeout)
    try:
        conn.execute(statement)
    except psycopg.OperationalError as exc:
        dropped = conn.broken
        conn.close()
        if not (reused and dropped):
            raise classify(url, exc) from None
        conn = _open(url, timeout)
        try:
            conn.execute(statement)
        except psycopg.Error as again:
            conn.close()
            raise classify(url, again) from None
    return conn


def close_idle() -> None:
    """Close every idle connection of this process (a bench measuring fresh connects, a test)."""
    with _lock:
        idle = [conn for conns in _idle.values() for conn in conns] if os.getpid() == _pid else []
        _idle.clear()
    for conn in idle:
        conn.close()


def with_connection(url: str, timeout: timedelta, read: Callable[[psycopg.Connection[Any]], T]) -> T:
    """`read` on a pooled connection; once more on a new one if a reused one turns out dropped."""
    conn, reused = take(url, timeout)
    try:
        result = read(conn)
    except psycopg.OperationalError:
        dropped = conn.broken
        conn.close()
        if not (reused and dropped):
            raise
        conn, reused = _open(url, timeout), False
        try:
            result = read(conn)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
        else:
            give_back(url, timeout, conn)
        raise
    give_back(url, timeout, conn)
    return result
