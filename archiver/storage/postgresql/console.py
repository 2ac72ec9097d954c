"""The SQL console on a PostgreSQL archive: one query, read-only, in the words DuckDB's console uses.

The query runs in a READ ONLY transaction with a statement timeout, on a connection of its own
that is closed afterwards. A READ ONLY transaction refuses writes, but not what a superuser (the
owner of many a team's database) may do beside them: COPY … TO a file or PROGRAM, pg_read_file,
set_config, signalling other backends. So before it runs, the query must be one statement that
is a query (SELECT, WITH, VALUES, TABLE), and its plan — EXPLAIN VERBOSE, which names every
function it calls after PostgreSQL has resolved quoting and inlining — must call none of the
functions that reach outside the archive or change settings. Refusals say "the query was
refused: `sql` only reads the archive (…)", as DuckDB's console does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.string import TextLoader

from archiver.errors import BadInput
from archiver.storage.postgresql import pool
from archiver.storage.reader import SqlResult

# Rows fetched from the server at a time while streaming CSV or JSON.
CHUNK = 2000
# What one console query may take: an analyst's long query runs, a forgotten one does not hold its
# snapshot (and VACUUM) for hours. Sent on every query; the server's own default is not relied on.
STATEMENT_TIMEOUT = timedelta(minutes=15)
# PostgreSQL's numeric types by OID (int8, int2, int4, oid, float4, float8, numeric), and its JSON ones.
NUMERIC_OIDS = frozenset({20, 21, 23, 26, 700, 701, 1700})
JSON_OIDS = frozenset({114, 3802})
# Statements the console runs: queries. Everything else (COPY, SET, DO, CALL, …) is refused unread.
QUERY_WORDS = frozenset({"select", "with", "values", "table"})
# Functions that read or write server files, run programs, change settings, signal or lock other
# sessions, run SQL given as text (which would escape this check), or reach other databases.
_FORBIDDEN = re.compile(
    r"\b(set_config|pg_read_file|pg_read_binary_file|pg_ls_\w+|pg_stat_file|lo_\w+|pg_file_\w+"
    r"|pg_terminate_backend|pg_cancel_backend|pg_signal_backend|pg_reload_conf|pg_rotate_logfile|pg_promote"
    r"|pg_switch_wal|pg_create_\w+|pg_drop_replication_slot|pg_replication_origin_\w+|pg_logical_\w+"
    r"|pg_advisory\w*|pg_try_advisory\w*|pg_notify|pg_stat_reset\w*|\w*_to_xml\w*|ts_stat|dblink\w*)\s*\(",
    re.IGNORECASE,
)
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\()*", re.DOTALL)


def _refused(reason: str) -> BadInput:
    return BadInput(f"the query was refused: `sql` only reads the archive ({reason})")


def first_word(query: str) -> str:
    """The statement's first keyword, past comments and opening parentheses (lowercase)."""
    rest = query[_LEADING.match(query).end():]  # type: ignore[union-attr]  # the pattern matches empty
    found = re.match(r"[A-Za-z]+", rest)
    return found.group(0).lower() if found else ""


@contextmanager
def run_sql(url: str, query: str, timeout: timedelta = timedelta(seconds=15)) -> Iterator[SqlResult]:
    """Run one query against the archive, read-only; the connection lives as long as the block."""
    word = first_word(query)
    if word not in QUERY_WORDS:
        shown = word.upper() or "that"
        raise _refused(f"{shown} is not a query: `sql` runs one SELECT, WITH, VALUES or TABLE statement")
    conn, _ = pool.take(url, timeout)
    try:
        for name in ("json", "jsonb"):  # JSON values as the server's text, as DuckDB's console gives them
            conn.adapters.register_loader(name, TextLoader)
        conn.execute("BEGIN READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT.total_seconds() * 1000)}")
        try:
            # prepare=True: the extended protocol, which refuses a second statement after the first.
            plan = "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN (VERBOSE) {query}", prepare=True))
            called = _FORBIDDEN.search(plan)
            if called:
                raise _refused(f"{called.group(1)}() reaches outside the archive or changes settings")
            cursor = conn.cursor(name="prefect_archiver_sql")
            cursor.execute(query)
        except pg_errors.UndefinedTable as exc:
            raise BadInput(_explain(exc) + _upgrade_hint(conn)) from None
        except psycopg.Error as exc:
            raise BadInput(_explain(exc)) from None
        description = cursor.description or []
        oids = [d.type_code for d in description]
        names = dict(conn.execute("SELECT t, format_type(t, NULL) FROM unnest(%s::oid[]) t", [oids]).fetchall())
        yield SqlResult(
            columns=[d.name for d in description],
            types=[str(names.get(oid, oid)) for oid in oids],
            rows=_fetch(cursor),
            json=[oid in JSON_OIDS for oid in oids],
            numeric=[oid in NUMERIC_OIDS for oid in oids],
        )
    finally:
        conn.close()  # never back to the pool: a console query may leave state behind


def _fetch(cursor: psycopg.ServerCursor[Any]) -> Iterator[tuple[Any, ...]]:
    while True:
        try:
            chunk = cursor.fetchmany(CHUNK)
        except psycopg.Error as exc:
            raise BadInput(_explain(exc)) from None
        if not chunk:
            return
        yield from chunk


def _explain(exc: psycopg.Error) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, (pg_errors.ReadOnlySqlTransaction, pg_errors.InsufficientPrivilege)) or "data-modifying" in first:
        return f"the query was refused: `sql` only reads the archive ({first})"
    if "multiple commands" in first:
        return f"the query failed: `sql` runs one statement at a time ({first})"
    return f"the query failed: {first}"


def _upgrade_hint(conn: psycopg.Connection[Any]) -> str:
    """When the archive predates tables or views this version has, say how to upgrade it."""
    from archiver.storage.postgresql.migrate import available

    conn.execute("ROLLBACK")
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    newest = available()[-1].version
    if row and row[0] is not None and row[0] < newest:
        return (f"; this archive's schema is version {row[0]} and this prefect-archiver's is {newest}: "
                "run `prefect-archiver sync` once to upgrade it in place")
    return ""
