"""The SQL console's connection: one query over the archive file, read-only.

The connection is opened read-only and with DuckDB's external access turned off and its
configuration locked: a query can read the archive but cannot write it, attach another copy of it
read-write, write files (COPY … TO), read other files, or turn those settings back on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from archiver.errors import BadInput
from archiver.storage.duckdb.connect import READER_CONFIG, Config, open_duckdb, require_archive, with_lock_retry
from archiver.storage.reader import SqlResult

SQL_CONFIG: Config = {
    **READER_CONFIG,
    "enable_external_access": False,
    "lock_configuration": True,
}


# Rows fetched from DuckDB at a time while streaming CSV or JSON.
CHUNK = 2000
# DuckDB's numeric types (a table right-aligns them); DECIMAL comes as DECIMAL(p,s).
NUMERIC_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "FLOAT", "DOUBLE", "DECIMAL",
})


@contextmanager
def run_sql(path: Path, query: str, timeout: timedelta = timedelta(seconds=15)) -> Iterator[SqlResult]:
    """Run one query against the archive, read-only; the connection lives as long as the block."""
    require_archive(path)
    conn = with_lock_retry(path, timeout, lambda: open_duckdb(str(path), read_only=True, config=SQL_CONFIG), reader=True)
    try:
        try:
            cursor = conn.execute(query)
        except duckdb.CatalogException as exc:
            raise BadInput(_explain(exc) + _upgrade_hint(conn)) from None
        except duckdb.Error as exc:
            raise BadInput(_explain(exc)) from None
        description = cursor.description or []
        types = [str(d[1]) for d in description]
        yield SqlResult(
            columns=[d[0] for d in description],
            types=types,
            rows=_fetch(cursor),
            json=[t == "JSON" for t in types],
            numeric=[t.split("(")[0] in NUMERIC_TYPES for t in types],
        )
    finally:
        conn.close()


def _fetch(cursor: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while True:
        try:
            chunk = cursor.fetchmany(CHUNK)
        except duckdb.Error as exc:
            raise BadInput(_explain(exc)) from None
        if not chunk:
            return
        yield from chunk


def _explain(exc: duckdb.Error) -> str:
    first = str(exc).splitlines()[0]
    if "read-only mode" in first or "file system operations are disabled" in first or "configuration has been locked" in first:
        return f"the query was refused: `sql` only reads the archive ({first})"
    return f"the query failed: {first}"


def _upgrade_hint(conn: duckdb.DuckDBPyConnection) -> str:
    """When the archive predates tables or views this version has, say how to upgrade it."""
    from archiver.storage.duckdb.migrate import available

    have = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    newest = available()[-1].version
    if have and have[0] is not None and have[0] < newest:
        return (f"; this archive's schema is version {have[0]} and this prefect-archiver's is {newest}: "
                "run `prefect-archiver sync` once to upgrade it in place")
    return ""
